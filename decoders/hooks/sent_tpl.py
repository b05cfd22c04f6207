"""The TPL header in front of a payload that no standard security mode opened.

A hook sees the payload after the TPL header, not the header. When the configuration field names
a manufacturer-specific security mode (16-31, EN 13757-7 Table 19), the envelope hands the
payload on as sent, so it is still the tail of the frame, and the 4 bytes before it are the
access number, the status byte and the configuration word (the short header of CI 7A; the long
header of CI 72 ends with the same 4 bytes, PROTOCOL_NOTES §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from decoders.hooks import HookInput

CI_TPL_LONG = 0x72
CI_TPL_SHORT = 0x7A
FIRST_MANUFACTURER_MODE = 16
_TAIL = 4  # ACC STS CFG(2)


@dataclass(frozen=True, slots=True)
class SentTpl:
    access_no: int
    status: int
    config: int  # byte0 | byte1 << 8

    @property
    def security_mode(self) -> int:
        return self.config >> 8 & 0x1F  # CFG bits 12-8 (PROTOCOL_NOTES §2.3)

    @property
    def manufacturer_specific(self) -> bool:
        return self.security_mode >= FIRST_MANUFACTURER_MODE


def sent_tpl(hook: HookInput) -> SentTpl | None:
    """The header fields before a payload still as sent; None when the frame has no CI 72/7A
    header or the payload is not its tail (a decrypted one)."""
    if hook.ci not in (CI_TPL_LONG, CI_TPL_SHORT) or not hook.frame.endswith(hook.payload):
        return None
    start = len(hook.frame) - len(hook.payload) - _TAIL
    if start < 0:
        return None
    access_no, status, low, high = hook.frame[start : start + _TAIL]
    return SentTpl(access_no, status, low | high << 8)
