"""Regenerates the package's gRPC stubs from the project's protos.

    python gen_stubs.py [OUT_DIR]

Writes contact_client/_proto/{contact,contact/v1/tasks,contact/v1/admin}
with grpcio-tools (no system protoc), then makes their imports relative to
the package, so the stubs never clash with another `contact` module. OUT_DIR
defaults to src/; the tests generate into a scratch folder and compare, so
the committed stubs never drift from the protos.
"""

import pathlib
import re
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTOS = ["contact.proto", "contact/v1/tasks.proto", "contact/v1/admin.proto"]


def main() -> None:
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "src"
    out = src / "contact_client" / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for folder in [out, out / "contact", out / "contact" / "v1"]:
        (folder / "__init__.py").touch()
    # `import contact_pb2` and `from contact.v1 import tasks_pb2` become
    # imports inside the package.
    for path in sorted(out.rglob("*.py*")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        text = re.sub(r"^import contact_pb2 as", "from contact_client._proto import contact_pb2 as", text, flags=re.M)
        text = re.sub(r"^from contact(\.v1)? import", lambda m: f"from contact_client._proto.contact{m.group(1) or ''} import", text, flags=re.M)
        path.write_text(text)


if __name__ == "__main__":
    main()
