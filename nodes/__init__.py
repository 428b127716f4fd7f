"""graphflow's Stable Diffusion node library: one module per stage family.

Importing this package puts Hugging Face libraries in offline mode before they are imported: graphflow
loads models from local files only and never downloads behind the user's back. It also quiets them (no
progress bars, errors only in their logs), so graphflow's progress is all a run prints."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Their progress bars ("Loading weights ...") and info/warning logs would interleave with graphflow's own
# progress on stderr; loading local files needs neither. Set these variables yourself to see them again.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def add_commands(subparsers) -> None:
    """The node library's own command (graphflow's CLI asks every node pack): ``graphflow import-a1111``."""
    command = subparsers.add_parser(
        "import-a1111", help="build a txt2img / hires-fix workflow from an AUTOMATIC1111 parameters text")
    command.add_argument("text", help='the parameters text as A1111 writes it (its "PNG Info"), or - to read stdin')
    command.add_argument("-o", "--output", metavar="OUT.json", help="write the workflow there instead of to stdout")
    command.add_argument("--models", help="models directory whose upscale_models/ the Hires upscaler is looked up in "
                                          "(default ./models or $GRAPHFLOW_MODELS_DIR)")

    def handler(args) -> int:
        from .a1111 import run_import  # the command's work imports torch: only when it runs

        return run_import(args)

    command.set_defaults(handler=handler)
