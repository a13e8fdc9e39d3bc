from manhole import bthome
from manhole.ccm import AesCcm

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = bytes.fromhex("5448e68f80a5")


def test_bthome_published_example():
    # bthome.io encryption example: 02CA09 03BF13, counter bytes 00 11 22 33.
    nonce = MAC + bytes.fromhex("d2fc41") + bytes.fromhex("00112233")
    out = AesCcm(KEY, 4).encrypt(nonce, bytes.fromhex("02ca0903bf13"))
    assert out.hex() == "a47266c95f73" + "78237214", out.hex()


def test_service_data_matches_published_advert():
    body = bytes.fromhex("02ca0903bf13")
    nonce = bthome.nonce(MAC, 0x41, 0x33221100)
    sealed = AesCcm(KEY, 4).encrypt(nonce, body)
    sdata = bytes([0x41]) + sealed[:-4] + (0x33221100).to_bytes(4, "little") + sealed[-4:]
    assert sdata.hex() == "41a47266c95f730011223378237214"


def test_multi_block_message():
    # 40 bytes spans three CTR blocks; checked against the gateway (cryptography) in pytest.
    out = AesCcm(KEY, 4).encrypt(bytes(13), bytes(range(40)))
    print("CCM40", out.hex())
    assert len(out) == 44


def test_bad_key_length():
    try:
        AesCcm(b"short", 4)
    except ValueError:
        return
    raise AssertionError("short key accepted")
