"""Data sets by name: `--data nations` finds the graph's files, in this order, in `--data-dir`
(as DIR/nations/ or DIR itself), in `$JAXDL_DATA/kg/nations/` (default ~/.cache/jaxdl), else
downloads them there with pooch, each checked against its SHA-256 below. Offline, the error
says which files to put where.

The pinned copies: Nations, UMLS and Kinships as PyKEEN ships them (the copies PyKEEN's
benchmarks use), WN18RR as Dettmers et al. released it; FB15k-237 is found locally only (no
pinned copy of its training file could be checked here).
"""
from __future__ import annotations

from pathlib import Path

import pooch

from jaxdl.data.download import default_cache_dir
from jaxdl.errors import JaxdlError

SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
_PYKEEN = ("https://raw.githubusercontent.com/pykeen/pykeen/05c7bbb20c952f3e5e958e694344ace4005b1bbb"
           "/src/pykeen/datasets")
_VILLMOW = ("https://raw.githubusercontent.com/villmow/datasets_knowledge_embedding"
            "/9e392453d6804d1f51c13e5650ae58ed48b638d5")

# name -> (URL prefix of the three files, or None: local only; {file: sha256})
KG_SETS: dict[str, tuple[str | None, dict[str, str]]] = {
    "nations": (f"{_PYKEEN}/nations/", {
        "train.txt": "0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
        "valid.txt": "2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
        "test.txt": "3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab"}),
    "umls": (f"{_PYKEEN}/umls/", {
        "train.txt": "873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
        "valid.txt": "025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
        "test.txt": "a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014"}),
    "kinships": (f"{_PYKEEN}/kinships/", {
        "train.txt": "738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
        "valid.txt": "c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
        "test.txt": "05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88"}),
    "wn18rr": (f"{_VILLMOW}/WN18RR/original/", {
        "train.txt": "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df",
        "valid.txt": "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab",
        "test.txt": "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5"}),
    "fb15k237": (None, {}),
}


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in SPLIT_FILES)


def graph_folder(spec: str, data_dir: str = "") -> Path:
    """`--data` -> the folder holding train/valid/test.txt: a named graph (see the module
    docstring) or a folder path as given."""
    if spec not in KG_SETS:
        return Path(spec)
    local = [Path(data_dir) / spec, Path(data_dir)] if data_dir else []
    cache = default_cache_dir() / "kg" / spec
    for folder in [*local, cache]:
        if _complete(folder):
            return folder
    where = f"put {', '.join(SPLIT_FILES)} (tab-separated head, relation, tail) of {spec} in {cache}, or pass " \
            f"--data-dir DIR with DIR/{spec}/"
    base, digests = KG_SETS[spec]
    if base is None:
        raise JaxdlError(f"--data {spec}: not found locally and not downloadable here: {where}")
    try:
        for name in SPLIT_FILES:
            pooch.retrieve(url=base + name, known_hash=f"sha256:{digests[name]}", fname=name, path=cache,
                           progressbar=False)
    except ValueError as e:  # pooch: the file's SHA-256 is not the pinned one
        raise JaxdlError(f"--data {spec}: a downloaded file does not match its pinned SHA-256 ({e}); {where}") \
            from None
    except Exception as e:  # noqa: BLE001 -- no network, refused, not found: pooch passes requests' errors on
        raise JaxdlError(f"--data {spec}: could not download it ({type(e).__name__}); {where}") from None
    return cache
