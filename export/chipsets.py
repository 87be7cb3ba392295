"""Snapdragon chipsets that `edge-gcl export --target` can compile a Hexagon (HTP) context for.

A QNN context binary is compiled for one Hexagon architecture and SoC: the QNN EP takes the SoC
as ``soc_model`` (an integer id) and the architecture as ``htp_arch`` (an integer, ``75`` for v75);
when both are given the SoC wins.

Sources for the ids:

* ``soc_model``: the ``Qnn_SocModel_t`` enum in the QNN SDK header ``QnnTypes.h``
  (``QNN_SOC_MODEL_SM8650 = 57`` ...), mirrored in executorch's Qualcomm backend and in
  llama.cpp's ``ggml-qnn/qnn-types.hpp``.
* ``aihub_chipset``: the chipset names Qualcomm AI Hub devices carry (``chipset:qualcomm-snapdragon-8gen3``),
  as listed by qai_hub_models (``WEBSITE_CHIPSET_ORDER``).
* ``htp_arch``: checked against the HTP backend shipped in onnxruntime-qnn 2.7.0 (QNN 2.51) on this
  machine: compiling with only ``soc_model=<id>`` makes the backend log, at verbose level,
  ``SoC model name is SM8650`` and ``DSP arch (min_arch) = 75``. Every row below was checked that
  way (``tests/test_qnn.py::test_chipset_table_matches_htp_backend`` repeats the check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Chipset:
    """One compile target: a Snapdragon SoC and its Hexagon NPU generation."""

    name: str  # marketing name, e.g. "Snapdragon 8 Gen 3"
    aliases: tuple[str, ...]  # other spellings accepted by get_chipset (case/space-insensitive)
    soc_model: int  # QNN `Qnn_SocModel_t` id, passed to the QNN EP as provider option `soc_model`
    htp_arch: str  # Hexagon architecture, "v75"
    part: str  # Qualcomm part number, "SM8650"
    aihub_chipset: str  # Qualcomm AI Hub device attribute value: `chipset:<this>`
    devices: tuple[str, ...] = ()  # a few phones/laptops that ship it, for --list-chipsets

    @property
    def htp_arch_number(self) -> int:
        """``htp_arch`` as the integer the QNN EP provider option wants ("v75" -> 75)."""
        return int(self.htp_arch.removeprefix("v"))


CHIPSETS: tuple[Chipset, ...] = (
    Chipset(
        name="Snapdragon 888",
        aliases=("888", "sd888"),
        soc_model=30,
        htp_arch="v68",
        part="SM8350",
        aihub_chipset="qualcomm-snapdragon-888",
        devices=("Samsung Galaxy S21", "Xiaomi Mi 11"),
    ),
    Chipset(
        name="Snapdragon 8 Gen 1",
        aliases=("8 Gen 1", "8gen1"),
        soc_model=36,
        htp_arch="v69",
        part="SM8450",
        aihub_chipset="qualcomm-snapdragon-8gen1",
        devices=("Samsung Galaxy S22", "Xiaomi 12"),
    ),
    Chipset(
        name="Snapdragon 8 Gen 2",
        aliases=("8 Gen 2", "8gen2"),
        soc_model=43,
        htp_arch="v73",
        part="SM8550",
        aihub_chipset="qualcomm-snapdragon-8gen2",
        devices=("Samsung Galaxy S23", "OnePlus 11"),
    ),
    Chipset(
        name="Snapdragon 8 Gen 3",
        aliases=("8 Gen 3", "8gen3"),
        soc_model=57,
        htp_arch="v75",
        part="SM8650",
        aihub_chipset="qualcomm-snapdragon-8gen3",
        devices=("Samsung Galaxy S24", "Xiaomi 14", "OnePlus 12"),
    ),
    Chipset(
        name="Snapdragon 8 Elite",
        aliases=("8 Elite", "8 Gen 4"),
        soc_model=69,
        htp_arch="v79",
        part="SM8750",
        aihub_chipset="qualcomm-snapdragon-8-elite",
        devices=("Samsung Galaxy S25", "OnePlus 13", "Xiaomi 15"),
    ),
    Chipset(
        name="Snapdragon 8 Elite Gen 5",
        aliases=("8 Elite Gen 5",),
        soc_model=87,
        htp_arch="v81",
        part="SM8850",
        aihub_chipset="qualcomm-snapdragon-8-elite-gen5",
        devices=("Xiaomi 17", "OnePlus 15"),
    ),
    Chipset(
        name="Snapdragon X Elite",
        aliases=("X Elite", "X1E"),
        soc_model=60,
        htp_arch="v73",
        part="SC8380XP",
        aihub_chipset="qualcomm-snapdragon-x-elite",
        devices=("Microsoft Surface Laptop 7", "Dell XPS 13 9345"),
    ),
    Chipset(
        name="Snapdragon X2 Elite",
        aliases=("X2 Elite",),
        soc_model=88,
        htp_arch="v81",
        part="SC8480XP",
        aihub_chipset="qualcomm-snapdragon-x2-elite",
    ),
)

# `--target snapdragon` (and the default target) compiles for the Snapdragon 8 Gen 3 (v75):
# it is the newest Hexagon generation with a large installed base (Galaxy S24, Xiaomi 14, OnePlus 12,
# and the reference phone of Qualcomm AI Hub), and v75 is the architecture on which the real towers
# were probed to place 100% on the HTP. Contexts are compiled per architecture, so a phone with another
# NPU generation needs its own `--target`.
DEFAULT_TARGET = "Snapdragon 8 Gen 3"

# Names that mean "the default flagship" rather than one chipset.
_DEFAULT_NAMES = ("snapdragon", "default")


def _key(text: str) -> str:
    """Case-, space- and punctuation-insensitive lookup key; "Snapdragon 8 Gen 3" -> "8gen3"."""
    key = re.sub(r"[\s_\-]+", "", text.strip().lower())
    key = key.replace("qualcomm", "")
    return key.removeprefix("snapdragon") or key


class UnknownChipsetError(ValueError):
    """Raised by :func:`get_chipset` for a name that matches no chipset."""


def _index() -> dict[str, Chipset]:
    index: dict[str, Chipset] = {}
    for chipset in CHIPSETS:
        for spelling in (chipset.name, chipset.part, *chipset.aliases):
            index[_key(spelling)] = chipset
    return index


def get_chipset(name_or_alias: str | Chipset) -> Chipset:
    """The chipset for a marketing name, part number or alias ("8 Gen 3", "SM8650", "snapdragon").

    Matching ignores case, spaces, hyphens and a leading "Snapdragon"/"Qualcomm".
    """
    if isinstance(name_or_alias, Chipset):
        return name_or_alias
    key = _key(name_or_alias)
    if key in _DEFAULT_NAMES or name_or_alias.strip().lower() in _DEFAULT_NAMES:
        return get_chipset(DEFAULT_TARGET)
    found = _index().get(key)
    if found is None:
        choices = ", ".join(f"{c.name} ({c.part})" for c in CHIPSETS)
        raise UnknownChipsetError(
            f"unknown chipset {name_or_alias!r}; choose one of: {choices}, or 'snapdragon' for {DEFAULT_TARGET}"
        )
    return found


def format_table() -> str:
    """A plain-text table of every chipset, for ``--list-chipsets``; the default is marked with ``*``."""
    header = ("", "chipset", "part", "soc_model", "htp", "aliases", "e.g.")
    rows = [header]
    for c in CHIPSETS:
        rows.append(
            (
                "*" if c.name == DEFAULT_TARGET else "",
                c.name,
                c.part,
                str(c.soc_model),
                c.htp_arch,
                ", ".join(c.aliases),
                ", ".join(c.devices) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"* default target ('--target snapdragon'): {DEFAULT_TARGET}")
    return "\n".join(lines)
