"""One-line messages for the deploy option models' validation errors (pydantic).

pydantic's own ``str(ValidationError)`` spans several lines and ends in a documentation link; the
option models (``InferConfig``, ``SliceConfig``) raise a plain ValueError with this line instead:
``<key>: <what is wrong>, got <value>`` for each bad key, the keys as the file or caller spells
them (``Preprocess``, ``slice_size[0]``).
"""


def _where(loc):
    """('NMS', 'keep_top_k') -> "NMS.keep_top_k"; ('slice_size', 0) -> "slice_size[0]"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def describe_validation_error(err):
    """A pydantic ValidationError -> one line naming every bad key and its value."""
    lines = []
    for error in err.errors(include_url=False):
        where = _where(error["loc"])
        if error["type"] == "missing":
            lines.append(
                f"{where}: missing (too few values)"
                if isinstance(error["loc"][-1], int)
                else f"missing key '{where}'"
            )
            continue
        message = error["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        lines.append(f"{where}: {message}, got {error['input']!r}")
    return "; ".join(lines)
