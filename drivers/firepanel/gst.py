"""GST-style (海湾-like) GB2312 printer records, one record per line, fields in any order:

    首次火警  08/12/02 17:24  004回路004号  感烟探测器  一层大厅东侧

- event words: 首次火警 / 火警 (fire; a smoke detector's fire alarm is kind "smoke"), 故障 / 故障恢复,
  主电故障 / 主电恢复, 备电故障 / 备电恢复, 监管 / 监管恢复, 启动 / 停止, 反馈 / 反馈撤销, 屏蔽 /
  取消屏蔽, 复位 (reset), 消音, 自检;
- time: `YY/MM/DD hh:mm[:ss]` (order set by `date_order`, also `YYYY-MM-DD`);
- loop and device: `004回路004号`, `回路004 地址004`, `004-004`, or `L004D004`;
- a device type from the panel's list (感烟探测器, 感温探测器, 手动报警按钮...);
- whatever text remains is the location text.
"""

from __future__ import annotations

import re
from datetime import datetime

from citynerve.drivers.firepanel.parsers import PanelParser, PanelRecord, RecordKind, register_parser
from citynerve.gateway.api import EventState, Severity

_R, _C = EventState.RAISED, EventState.CLEARED

# longest words first: 故障恢复 must win over 故障, 取消屏蔽 over 屏蔽
EVENT_WORDS: tuple[tuple[str, RecordKind, EventState, Severity], ...] = tuple(
    sorted(
        [
            ("首次火警", RecordKind.FIRE, _R, Severity.CRITICAL),
            ("火警", RecordKind.FIRE, _R, Severity.CRITICAL),
            ("故障恢复", RecordKind.PANEL_FAULT, _C, Severity.MAJOR),
            ("故障排除", RecordKind.PANEL_FAULT, _C, Severity.MAJOR),
            ("故障", RecordKind.PANEL_FAULT, _R, Severity.MAJOR),
            ("主电故障", RecordKind.MAINS_FAULT, _R, Severity.MAJOR),
            ("主电恢复", RecordKind.MAINS_FAULT, _C, Severity.MAJOR),
            ("备电故障", RecordKind.BATTERY_FAULT, _R, Severity.MINOR),
            ("备电恢复", RecordKind.BATTERY_FAULT, _C, Severity.MINOR),
            ("监管恢复", RecordKind.SUPERVISORY, _C, Severity.MINOR),
            ("监管", RecordKind.SUPERVISORY, _R, Severity.MINOR),
            ("启动", RecordKind.LINKAGE_START, _R, Severity.INFO),
            ("停止", RecordKind.LINKAGE_START, _C, Severity.INFO),
            ("反馈撤销", RecordKind.LINKAGE_FEEDBACK, _C, Severity.INFO),
            ("反馈", RecordKind.LINKAGE_FEEDBACK, _R, Severity.INFO),
            ("取消屏蔽", RecordKind.DISABLED, _C, Severity.WARNING),
            ("屏蔽", RecordKind.DISABLED, _R, Severity.WARNING),
            ("复位", RecordKind.RESET, _R, Severity.INFO),
            ("消音", RecordKind.SILENCED, _R, Severity.INFO),
            ("自检", RecordKind.SELF_TEST, _R, Severity.INFO),
        ],
        key=lambda row: -len(row[0]),
    )
)

DEVICE_TYPES = (
    "感烟探测器",
    "光电感烟探测器",
    "感温探测器",
    "复合探测器",
    "火焰探测器",
    "线型光束感烟探测器",
    "可燃气体探测器",
    "手动报警按钮",
    "消火栓按钮",
    "输入模块",
    "输出模块",
    "输入输出模块",
    "声光报警器",
    "水流指示器",
    "压力开关",
    "信号阀",
    "排烟阀",
    "防火阀",
    "广播模块",
    "讯响器",
)
SMOKE_TYPES = ("感烟", "光束")

_NEEDS_POINT = frozenset({RecordKind.LINKAGE_START, RecordKind.LINKAGE_FEEDBACK})

_NOISE = re.compile(r"[\ufffd\x00-\x08\x0b-\x1f\x7f]")  # not tab, LF or CR (LF/CR end lines)
_TIME = re.compile(r"(\d{2,4})[/.-](\d{1,2})[/.-](\d{1,2})\s*(\d{1,2}):(\d{2})(?::(\d{2}))?")
_LOOP_DEVICE = (
    re.compile(r"(\d{1,3})\s*回路\s*(\d{1,3})\s*号?"),
    re.compile(r"回路\s*[:：]?\s*(\d{1,3})\s*(?:地址|点|号)\s*[:：]?\s*(\d{1,3})"),
    re.compile(r"(?<![\d/:.-])(\d{3})-(\d{3})(?![\d/:.-])"),
    re.compile(r"L(\d{1,3})\s*D(\d{1,3})", re.IGNORECASE),
)


@register_parser("gst")
class GstParser(PanelParser):
    """GST-style print records (see the module docstring)."""

    def parse_line(self, line: str) -> PanelRecord | None:
        # A noise byte on the wire decodes to U+FFFD or a control character: it carries no meaning,
        # and left in place it splits an event word (首次火\ufffd警) or a loop number. `raw` keeps it.
        text = _NOISE.sub("", line).replace("\u3000", " ").strip()
        if not text:
            return None
        match = next(((w, k, s, sev) for w, k, s, sev in EVENT_WORDS if w in text), None)
        if match is None:
            return None
        word, kind, state, severity = match
        rest = text.replace(word, " ", 1)
        panel_time = None
        m = _TIME.search(rest)
        if m:
            panel_time = self._time(m)
            rest = rest[: m.start()] + " " + rest[m.end() :]
        loop = device = None
        for pattern in _LOOP_DEVICE:
            m = pattern.search(rest)
            if m:
                loop, device = int(m.group(1)), int(m.group(2))
                rest = rest[: m.start()] + " " + rest[m.end() :]
                break
        if kind in _NEEDS_POINT and loop is None:
            return None  # "系统启动" is a boot message, not a linkage output: keep it raw
        device_type = next((t for t in sorted(DEVICE_TYPES, key=len, reverse=True) if t in rest), "")
        if device_type:
            rest = rest.replace(device_type, " ", 1)
        if kind is RecordKind.FIRE and any(s in device_type for s in SMOKE_TYPES):
            kind = RecordKind.SMOKE
        location = " ".join(rest.split())
        return PanelRecord(kind, state, severity, word, panel_time, loop, device, device_type, location, line)

    def _time(self, m: re.Match[str]) -> str | None:
        a, b, c = int(m.group(1)), int(m.group(2)), int(m.group(3))
        order = "ymd" if len(m.group(1)) == 4 else self.date_order
        year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}.get(order, (a, b, c))
        if year < 100:
            year += 2000
        try:
            when = datetime(year, month, day, int(m.group(4)), int(m.group(5)), int(m.group(6) or 0))
        except ValueError:  # the panel's clock printed an impossible date: keep the record anyway
            return None
        return when.isoformat()
