"""`python -m cgunicorn ARGS` runs `cgunicorn ARGS`, as `python -m gunicorn` does."""
import os
import shutil
import sys
import sysconfig


def main():
    here = os.path.join(sysconfig.get_path("scripts"), "cgunicorn")
    binary = here if os.access(here, os.X_OK) else shutil.which("cgunicorn")
    if binary is None:
        sys.exit("cgunicorn: the cgunicorn program is not in %s nor on PATH; "
                 "reinstall the package (pip install --force-reinstall cgunicorn)"
                 % os.path.dirname(here))
    os.execv(binary, [binary] + sys.argv[1:])


if __name__ == "__main__":
    main()
