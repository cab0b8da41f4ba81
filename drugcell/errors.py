"""One error type for bad user input, so the CLI can print it cleanly and exit 2."""


class DrugcellInputError(ValueError):
    """Input the user can fix: the message names the file/column/row/compound and what to do."""
