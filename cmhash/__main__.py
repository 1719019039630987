"""`python -m cmhash` (what `torchrun -m cmhash train ...` runs)."""

from cmhash.cli import main

if __name__ == "__main__":
    main()
