# AES-CCM (RFC 3610) built on AES-ECB from cryptolib, pure MicroPython.
#
# BTHome v2 uses a 13-byte nonce (so L = 2: messages up to 65535 bytes), a 4-byte MIC and no
# associated data. Only encryption is needed on the node.

try:
    import cryptolib
except ImportError:  # older firmware names it ucryptolib
    import ucryptolib as cryptolib

_MODE_ECB = 1


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


class AesCcm:
    def __init__(self, key, tag_len=4):
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes")
        if tag_len not in (4, 6, 8, 10, 12, 14, 16):
            raise ValueError("bad tag length")
        self._key = bytes(key)
        self.tag_len = tag_len

    def _ecb(self):
        # A fresh object per message: some ports keep chaining state inside an aes object.
        return cryptolib.aes(self._key, _MODE_ECB)

    def encrypt(self, nonce, msg):
        """Return ciphertext + tag (tag_len bytes)."""
        if len(nonce) != 13:
            raise ValueError("nonce must be 13 bytes")
        if len(msg) > 0xFFFF:
            raise ValueError("message too long")
        aes = self._ecb()
        m = self.tag_len
        # CBC-MAC over B0 and the zero-padded message (no associated data).
        b0 = bytes([((m - 2) // 2) << 3 | 1]) + nonce + bytes([len(msg) >> 8, len(msg) & 0xFF])
        x = aes.encrypt(b0)
        for i in range(0, len(msg), 16):
            block = msg[i : i + 16]
            if len(block) < 16:
                block = block + bytes(16 - len(block))
            x = aes.encrypt(_xor(x, block))
        tag = x[:m]
        # CTR: A_i = flags(L-1) | nonce | i
        out = bytearray()
        n_blocks = (len(msg) + 15) // 16
        for i in range(1, n_blocks + 1):
            s = aes.encrypt(bytes([1]) + nonce + bytes([i >> 8, i & 0xFF]))
            chunk = msg[(i - 1) * 16 : i * 16]
            out.extend(_xor(chunk, s))
        s0 = aes.encrypt(bytes([1]) + nonce + b"\x00\x00")
        return bytes(out) + _xor(tag, s0)
