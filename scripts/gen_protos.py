"""Generate the Python gRPC stubs of protos/astro/v1 into services/protos/astro/v1.

Run with `make protos`. tests/test_protos.py regenerates into a temporary folder and fails
when the committed stubs differ, so stubs are never edited by hand or left stale.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "services.protos"
DEFAULT_OUT = ROOT / "services" / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "astro" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir/astro/v1."""
    from grpc_tools import protoc  # dev dependency; imported here so the package never needs it

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{_well_known_protos()}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see its message above")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            # protoc writes imports rooted at the proto path ("from astro.v1 import ...");
            # the stubs live inside our package, so root them there.
            text = src.read_text().replace(
                "from astro.v1 import", f"from {PACKAGE}.astro.v1 import"
            )
            dst.write_text(text)
            written.append(dst)
    for pkg in [out_dir, out_dir / "astro", out_dir / "astro" / "v1"]:
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated gRPC stubs (make protos). Do not edit."""\n')
            written.append(init)
    return written


def _well_known_protos() -> str:
    import grpc_tools

    return str(Path(grpc_tools.__file__).parent / "_proto")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(path.relative_to(out.parent) if path.is_relative_to(out.parent) else path)
