"""`python -m symscale` is the `symscale` command."""

from symscale.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
