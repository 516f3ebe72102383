"""`python -m minillava ...` is the `minillava` command (Lightning's launcher re-runs it this way in its workers)."""

from .cli import main

if __name__ == "__main__":
    main()
