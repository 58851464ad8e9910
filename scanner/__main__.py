"""`python -m scanner ARGS`: the `scanner` command without its installed entry point (a bare GPU machine, from the
repository's root)."""

from scanner.cli import main

if __name__ == "__main__":
    main()
