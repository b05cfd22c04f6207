"""Fixed wM-Bus vectors (each with its source) and hypothesis strategies for the wM-Bus tests."""

from __future__ import annotations

from hypothesis import strategies as st

from decoders.afl import FCL_KI, FCL_MAC, FCL_MCL, FCL_MCR, FCL_ML, MAC_LENGTHS, Afl
from decoders.ell import Ell
from decoders.telegram import Address, TplHeader
from decoders.wmbus_link import read_link_address


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# PROTOCOL_NOTES §1.6: Sontex HCA in format A, wmbusmeters simulations/simulation_dll_crcs.txt.
SONTEX_A = h(
    "34 44 EE 4D 81 39 29 27 16 08 811D"
    " 7A 51 00 00 00 04 6D 19 12 A6 2B 03 6E 00 00 00 5170"
    " 42 6C E1 F1 43 6E 00 00 00 02 FF 2C 00 00 02 59 D6D0"
    " D4 09 02 65 FC 09 02 FD 66 A0 00 44C4"
)
SONTEX_STRIPPED = h(
    "34 44 EE 4D 81 39 29 27 16 08"
    " 7A 51 00 00 00 04 6D 19 12 A6 2B 03 6E 00 00 00"
    " 42 6C E1 F1 43 6E 00 00 00 02 FF 2C 00 00 02 59"
    " D4 09 02 65 FC 09 02 FD 66 A0 00"
)

# PROTOCOL_NOTES §3: waterstarm mode 5, wmbusmeters drivers/src/waterstarm.xmq (the notes elide
# the cipher bytes and print their end as 5D7C9A; the driver's telegram ends them 9D7C9A).
WATERSTARM_KEY = h("BEDB81B52C29B5C143388CBB0D15A051")
WATERSTARM = h(
    "39 44 FA12 21620920 02 06 7A 36 00 2025"
    " 67C94D48D00DC47B11213E23383DB51968A705AAFA60C60E263D50CD259D7C9A"
    " 03FD0C080000 02FD0B0011"
)
WATERSTARM_PLAIN = h("2F2F 046D 282A9E27 0413 6A000000 02FD17 0000 04933C 00000000 2F2F2F2F2F2F")
WATERSTARM_TAIL = h("03FD0C080000 02FD0B0011")

# PROTOCOL_NOTES §1.5 and §4.5: sensostar mode 7 in format B, wmbusmeters
# tests/test_frame_b_trim.sh.
SENSOSTAR_KEY = h("622b9656991ff0c1574c0950cf9278d1")
SENSOSTAR_B = h(
    "C244C5140443054300048C200E900F002C25895E02003B0877D31DA840B17A0E009007100F8FAD4C4E61400D"
    "A4F3B1F7E273CC4C5C07F93CD20B237345DB39F9A98F8415E1C4B7A25C86E4C22D05C3352FA7E2E5627031F1"
    "4643063F1DC8FE2C32459B6F02E4234B447B18E4BFDA8C4DA9B1EDE6CF29D0B2122A3E8B9DEEBEE3E6DBE661"
    "7B4E709EC6B595179CB01C2C0BDE6723A345B708652880C114A58DA07C73AD9EB8ACB17FA0A88F19BC84CB1F"
    "C56672DE8A9603FD0C05010002FD0B2111F60B"
)
SENSOSTAR_TAIL = h("03FD0C050100 02FD0B2111")
SENSOSTAR_KENC = h("bb13ab0fbbc1f043bdaa104cc8d2d428")
SENSOSTAR_KMAC = h("a69bd3f061c0c21e90d55d3f34117650")
SENSOSTAR_MAC = h("3B0877D31DA840B1")

# PROTOCOL_NOTES §5.3: Kamstrup MULTICAL 21, ELL AES-CTR, wmbusmeters tests/test_analyze.sh.
KAMSTRUP_KEY = h("28F64A24988064A079AA2C807D6102AE")
KAMSTRUP = h(
    "2A 44 2D2C 99873476 1B 16 8D 20 91 D37CAC21"
    " E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"
)
KAMSTRUP_PLAIN = h("576C 78 02FF20 7100 0413 08190000 4413 08190000 615B 7F 6167 13")
KAMSTRUP_COUNTER_BLOCK = h("2D2C 998734761B16 20 D37CAC21 000000")

# PROTOCOL_NOTES §6.2: the compact counterpart of the Kamstrup records (CI 79).
KAMSTRUP_COMPACT_APL = h("ED A8 6A B6 710008190000081900007F13")

# PROTOCOL_NOTES §8.1: wired M-Bus GWF MTKcoder (libmbus test frame), the bytes after CI 72.
GWF_WIRED_DATA = h("07201800 E61E 35 07 4C 00 0000 0C78 07201800 0C16 69020000")

FIXED_FRAMES = (
    (SONTEX_A, None),
    (WATERSTARM, WATERSTARM_KEY),
    (SENSOSTAR_B, SENSOSTAR_KEY),
    (KAMSTRUP, KAMSTRUP_KEY),
)

addresses = st.binary(min_size=8, max_size=8).map(lambda raw: read_link_address(raw, 0))
keys = st.binary(min_size=16, max_size=16)


@st.composite
def tpl_headers(draw: st.DrawFn, mode: int) -> TplHeader:
    """A TPL header of any CI that can carry `mode` (78/79 carry no CFG, so only mode 0)."""
    cis = [0x72, 0x73, 0x7A, 0x7B] + ([0x78, 0x79] if mode == 0 else [])
    ci = draw(st.sampled_from(cis))
    if ci in (0x78, 0x79):
        return TplHeader(ci=ci)
    flags = draw(st.integers(0, 0xFF)) & (0xFF if mode == 0 else 0x0F)
    config = draw(st.integers(0, 7)) << 13 | mode << 8 | flags
    config_ext = 0x10 | draw(st.integers(0, 0x0F)) if mode == 7 else None
    return TplHeader(
        ci=ci,
        access_no=draw(st.integers(0, 0xFF)),
        status=draw(st.integers(0, 0xFF)),
        config=config,
        config_ext=config_ext,
        address=draw(addresses) if ci in (0x72, 0x73) else None,
    )


@st.composite
def ells(draw: st.DrawFn, encrypt: bool) -> Ell:
    ci = draw(st.sampled_from([0x8D, 0x8F] if encrypt else [0x8C, 0x8D, 0x8E, 0x8F]))
    session = None
    if ci in (0x8D, 0x8F):
        session = (1 if encrypt else 0) << 29 | draw(st.integers(0, (1 << 29) - 1))
    return Ell(
        ci=ci,
        cc=draw(st.integers(0, 0xFF)),
        access_no=draw(st.integers(0, 0xFF)),
        session=session,
        receiver=draw(addresses) if ci in (0x8E, 0x8F) else None,
    )


@st.composite
def afls(draw: st.DrawFn, mode: int) -> Afl:
    """An unfragmented AFL; mode 7 gets a message counter and, maybe, a CMAC to be computed."""
    with_counter = mode == 7 or draw(st.booleans())
    with_mac = draw(st.booleans())
    with_mcl = with_mac or draw(st.booleans())
    at = draw(st.sampled_from([3, 4, 5, 6, 7])) if with_mac else draw(st.integers(0, 2))
    fcl = (FCL_MCR if with_counter else 0) | (FCL_MAC if with_mac else 0)
    fcl |= FCL_MCL if with_mcl else 0
    key_info = draw(st.none() | st.integers(0, 0xFFFF))
    length = draw(st.none() | st.integers(0, 0xFFFF))
    fcl |= (FCL_KI if key_info is not None else 0) | (FCL_ML if length is not None else 0)
    mac = None
    if with_mac and mode != 7:
        mac = draw(st.binary(min_size=MAC_LENGTHS[at], max_size=MAC_LENGTHS[at]))
    return Afl(
        fcl=fcl,
        mcl=draw(st.integers(0, 7)) << 4 | at if with_mcl else None,
        key_info=key_info,
        counter=draw(st.integers(0, 0xFFFFFFFF)) if with_counter else None,
        mac=mac,
        length=length,
    )


def address_of(frame: bytes) -> Address:
    return read_link_address(frame, 2)
