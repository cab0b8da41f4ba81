"""`python -m drugcell` runs the same CLI as the `drugcell` script."""

from drugcell.cli import main

if __name__ == "__main__":
    main()
