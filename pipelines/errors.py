"""Errors about input data: always name the feature (where known), the file and the row."""


class InputError(ValueError):
    def __init__(self, message: str, path: str = None, row: int = None, feature: str = None):
        where = ", ".join(p for p in (
            f"feature '{feature}'" if feature else None,
            f"file {path}" if path else None,
            f"row {row}" if row is not None else None) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.detail, self.path, self.row, self.feature = message, path, row, feature

    def shifted(self, rows_before: int) -> "InputError":
        """The same error with its row counted from the start of the file, for a
        reader that started `rows_before` rows into it."""
        return InputError(self.detail, self.path, self.row + rows_before if self.row is not None else None,
                          self.feature)

    def __reduce__(self):  # survive pickling between Beam workers with the full message
        return (InputError, (self.args[0],))
