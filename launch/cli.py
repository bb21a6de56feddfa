"""What every launcher shares: flags parsed and bad input reported in one line.

    if __name__ == "__main__":
        cli.run(main)

A config flag that does not exist, a config file that cannot be loaded, a missing run
directory, a broken data or weights file: each is one line on stderr naming the file or
field and what was expected, exit status 2, no traceback. `--verbose` (or
AES_JAX_TRACEBACK=1) shows the traceback too. orbax's INFO chatter is off unless
--verbosity is given.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Callable

from absl import app, flags, logging

VERBOSE = flags.DEFINE_bool("verbose", False, "Show the full traceback of an error (or set "
                            "AES_JAX_TRACEBACK=1).")
USAGE_EXIT = 2

# Errors that mean bad input or options; anything else is a bug and keeps its traceback.
# OSError covers missing/unreadable files, ValueError the readers' format errors (data,
# weights, configs), KeyError a missing tensor or config key.
USER_ERRORS = (ValueError, OSError, KeyError, ArithmeticError)


def _program() -> str:
    name = os.path.basename(sys.argv[0] or "aes_jax")
    if name == "__main__.py" or name.endswith(".py"):
        name = sys.modules["__main__"].__spec__.name if getattr(
            sys.modules["__main__"], "__spec__", None) else name
    return name


def _verbose(argv: list[str]) -> bool:
    return (os.environ.get("AES_JAX_TRACEBACK", "") not in ("", "0")
            or any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv))


def one_line(error: BaseException) -> str:
    """The part of an error message a person needs: its last non-empty line (config
    loaders wrap the real error in a traceback), KeyErrors unquoted."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = " ".join(lines) if len(lines) <= 2 else lines[-1]
    return re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", line)


def _misspelled_field(error: Exception, argv: list[str]) -> str | None:
    """ml_collections' "'totl_steps' Did you mean ..." for a --config.X override."""
    text = str(error).replace("\\'", "'")
    field = re.search(r"'(\w+)'", text)
    if field is None:
        return None
    given = next((a.split("=")[0] for a in argv
                  if a.startswith("--") and "." in a and field.group(1) in a.split("=")[0]),
                 f"--config.{field.group(1)}")
    close = re.search(r'Did you mean "([\w.]+)"', text)
    return (f"{given}: no such config field" +
            (f" (did you mean {close.group(1)}?)" if close else ""))


def _unknown_flag(error: flags.UnrecognizedFlagError) -> str:
    name = error.flagname if hasattr(error, "flagname") else str(error)
    known = list(flags.FLAGS)
    close = difflib.get_close_matches(name, known, n=1)
    if "." in name:
        message = f"--{name}: no such config field"
    else:
        message = f"--{name}: no such flag"
    return message + (f" (did you mean --{close[0]}?)" if close else "")


def fail(message: str) -> None:
    print(f"{_program()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        if _verbose(argv):
            raise
        fail(_unknown_flag(e))
    except (AttributeError, KeyError) as e:  # a --config.X override of a field that isn't
        if _verbose(argv):
            raise
        fail(_misspelled_field(e, argv) or one_line(e))
    except OSError as e:  # a config file that cannot be loaded
        if _verbose(argv):
            raise
        fail(f"cannot load the config: {one_line(e)}")
    except (flags.Error, *USER_ERRORS) as e:
        if _verbose(argv):
            raise
        flag = re.match(r"flag (--[^=:\s]+)", str(e))  # absl names the flag on line 1
        message = one_line(e)
        fail(message if flag is None or flag.group(1) in message
             else f"{flag.group(1)}: {message}")
    raise AssertionError("unreachable")


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)` with one-line errors for bad input (see the module docstring)."""

    def guarded(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every phase at INFO
        try:
            main(argv)
        except app.UsageError:
            raise  # absl prints these itself, with the usage line
        except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handling
            print(f"{_program()}: interrupted", file=sys.stderr, flush=True)
            sys.exit(130)
        except USER_ERRORS as e:
            if VERBOSE.value or _verbose(sys.argv):
                raise
            fail(one_line(e))

    app.run(guarded, flags_parser=_parse_flags)


def define_step_flag() -> flags.FlagHolder:
    return flags.DEFINE_string("step", "", "Checkpoint: best (the best-on-dev one the run "
                               "kept), last, or a step number; default best when the run "
                               "has one, else last.")


def chosen_step(run_dir: str, which: str) -> int:
    """The checkpoint step `--step` names; says which one was used and why."""
    from aes_jax.train.checkpoint import resolve_step

    step, how = resolve_step(run_dir, which or None)
    print(f"checkpoint: step {step} ({how})", flush=True)
    return step
