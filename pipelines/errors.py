"""Errors about input data: always name the feature (where known), the file and the row."""

from typing import Optional, Sequence, Union


class InputError(ValueError):
    """`feature`: a feature name, or several when a reader's problem is with a column
    that feeds more than one. `column`: the source column, set by readers that check a
    column's values before anything knows which features read it (`naming_features`)."""

    # Beam re-raises an exception from a step as a new one with " [while running
    # '<step>']" appended, after logging its traceback (printed on a CLI user's
    # stderr); a tagged exception is re-raised as it is, full fields and one line.
    _tagged_with_step = True

    def __init__(self, message: str, path: str = None, row: int = None,
                 feature: Union[str, Sequence[str], None] = None, column: Optional[str] = None):
        message = " ".join(str(message).split())  # one line: library messages may hold newlines
        names = [feature] if isinstance(feature, str) else list(feature or ())
        where = ", ".join(p for p in (
            (f"feature '{names[0]}'" if len(names) == 1 else
             "features " + ", ".join(f"'{n}'" for n in names) if names else None),
            (f"file {path}" if path != "<elements>" else "a batch of the PCollection's elements") if path else None,
            (f"row {row}" if path != "<elements>" else f"element {row} of the batch") if row is not None else None)
            if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.detail, self.path, self.row, self.feature, self.column = message, path, row, feature, column

    def shifted(self, rows_before: int) -> "InputError":
        """The same error with its row counted from the start of the file, for a
        reader that started `rows_before` rows into it."""
        return InputError(self.detail, self.path, self.row + rows_before if self.row is not None else None,
                          self.feature, self.column)

    def naming_features(self, features_of_column) -> "InputError":
        """The same error naming the features that read its column (a mapping from
        column to feature names), if it has a column and names no feature yet."""
        names = sorted(features_of_column.get(self.column, ())) if self.column and not self.feature else ()
        return InputError(self.detail, self.path, self.row, names, self.column) if names else self

    def __reduce__(self):  # survive pickling between Beam workers with the full message
        return (_restore, (self.args[0], self.detail, self.path, self.row, self.feature, self.column))


def _restore(text, detail, path, row, feature, column) -> InputError:
    error = InputError(detail, path, row, feature, column)
    error.args = (text,)
    return error
