"""``python -m gateway``: the same as the ``fcgi-gateway`` command."""

from .cli import main

if __name__ == "__main__":
    main()
