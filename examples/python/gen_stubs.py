"""Regenerates the seed tutorial client's stubs with grpcio-tools (the
other examples use the contact-client package, whose stubs
clients/python/gen_stubs.py makes).

    python gen_stubs.py [OUT_DIR]

seed/contact/contact_pb2*.py come from the seed's unchanged contact.proto
(tests/proto/contact.seed.proto, a copy of shared/contact.seed.proto), laid
out as the tutorial has it: a `contact` package beside contact_client.py.

OUT_DIR defaults to this folder; the interop tests generate into a scratch
folder and compare, so the committed stubs never drift from the protos.
"""

import pathlib
import shutil
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def generate(include: pathlib.Path, proto: str, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{include}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        proto,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {include / proto}")


def main() -> None:
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    # The seed's file, under the name and folder the tutorial gives it, so
    # the generated code imports itself as `contact.contact_pb2`.
    with tempfile.TemporaryDirectory() as scratch:
        package = pathlib.Path(scratch) / "contact"
        package.mkdir()
        shutil.copy(ROOT / "tests" / "proto" / "contact.seed.proto", package / "contact.proto")
        generate(pathlib.Path(scratch), "contact/contact.proto", out / "seed")
    (out / "seed" / "contact" / "__init__.py").touch()


if __name__ == "__main__":
    main()
