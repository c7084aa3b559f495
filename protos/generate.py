"""Generate the Python code of the contracts: ``python protos/generate.py [--check]``.

Writes ``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi`` stubs beside the ``.proto`` files, so
``import shoptwin.v1.dispatch_pb2`` matches the proto package. ``--check`` generates into a
temporary directory and exits 1 when the committed files differ (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PACKAGE = Path("shoptwin") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto under protos/shoptwin/v1 into ``out_dir``; return the files."""
    protos = sorted((ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        # The mypy-protobuf plugins sit beside the interpreter in the virtual environment.
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_dir / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        target = ROOT / PACKAGE
        existing = {p.name for p in target.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        wanted = {p.name for p in generated}
        if args.check:
            stale = sorted(
                name
                for name in wanted | existing
                if name not in existing
                or name not in wanted
                or not filecmp.cmp(target / name, Path(tmp) / PACKAGE / name, shallow=False)
            )
            if stale:
                print("generated protobuf code is stale; run `make protos`:", *stale, sep="\n  ")
                return 1
            print(f"generated protobuf code is up to date ({len(wanted)} files)")
            return 0
        for name in existing - wanted:
            (target / name).unlink()
        for path in generated:
            shutil.copyfile(path, target / path.name)
        print(f"generated {len(generated)} files in {target.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
