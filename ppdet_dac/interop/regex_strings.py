r"""Every string a mapping-table regex matches, read from the pattern text (no private ``re`` API).

The tables in ``tables.py`` use a small part of the regex language, and only that part is read:

* literal characters and escaped punctuation (``\.``);
* groups ``( )``, ``(?: )`` and ``(?P<name> )`` with alternatives ``a|b``;
* character sets ``[12]``, ``[0-9]``, ``[\d]`` and the class ``\d`` (one digit);
* ``?`` after any item (absent first, then present);
* ``\d+``: a number, taken from the caller's ``numbers``; ``.+``: a text, from ``texts``.

Anything else (``*``, ``{m,n}``, other classes, anchors, look-arounds, negated sets) raises
``ValueError`` naming the pattern and the position, so a table rule nobody can invert is found
when the inverse is built, not silently skipped. Strings come out in pattern order: alternatives
left to right, an optional item absent before present.
"""

__all__ = ["pattern_strings"]

_SPECIAL = set("^$*+{[")  # outside the subset (a lone "]" or "}" is a literal, as in re)


def pattern_strings(pattern, numbers, texts):
    r"""The strings ``pattern`` (a regex of the subset above) matches as a whole.

    numbers: the values ``\d+`` may take (ints); texts: the strings ``.+`` may take.
    Returns a list in pattern order (duplicates kept, as the regex would list them).
    """
    parser = _Parser(pattern, [str(n) for n in numbers], list(texts))
    options = parser.alternatives()
    if parser.pos != len(pattern):
        parser.fail("an unmatched ')'")
    return options


class _Parser:
    """Recursive descent over the pattern text; each method returns the list of strings its
    part of the pattern matches."""

    def __init__(self, pattern, numbers, texts):
        self.pattern, self.numbers, self.texts, self.pos = pattern, numbers, texts, 0

    def fail(self, what):
        raise ValueError(
            f"cannot invert a table rule with {what} at position {self.pos} of {self.pattern!r}"
        )

    def peek(self, count=1):
        return self.pattern[self.pos : self.pos + count]

    def alternatives(self):
        """``seq | seq | ...`` up to a ')' or the end."""
        options = self.sequence()
        while self.peek() == "|":
            self.pos += 1
            options = options + self.sequence()
        return options

    def sequence(self):
        strings = [""]
        while self.pos < len(self.pattern) and self.peek() not in "|)":
            item = self.item()
            strings = [head + tail for head in strings for tail in item]
        return strings

    def item(self):
        """One atom and its quantifier (only ``?``; ``+`` only in ``\\d+`` and ``.+``)."""
        if self.peek(3) == r"\d+":
            self.pos += 3
            return list(self.numbers)
        if self.peek(2) == ".+":
            self.pos += 2
            return list(self.texts)
        strings = self.atom()
        if self.peek() == "?":
            self.pos += 1
            strings = [""] + strings
        if self.peek() and self.peek() in "?*+{":
            self.fail(f"the quantifier {self.peek()!r}")
        return strings

    def atom(self):
        char = self.peek()
        if char == "(":
            return self.group()
        if char == "[":
            return self.charset()
        if char == "\\":
            return self.escape(in_set=False)
        if char == "." or char in _SPECIAL:
            self.fail(f"the construct {char!r}")
        self.pos += 1
        return [char]

    def group(self):
        self.pos += 1
        if self.peek(3) == "?P<":
            end = self.pattern.find(">", self.pos)
            if end < 0:
                self.fail("an unterminated group name")
            self.pos = end + 1
        elif self.peek(2) == "?:":
            self.pos += 2
        elif self.peek() == "?":
            self.fail("the group extension '(?'")
        options = self.alternatives()
        if self.peek() != ")":
            self.fail("an unterminated group")
        self.pos += 1
        return options

    def escape(self, in_set):
        """``\\d`` (the ten digits) or an escaped punctuation character (itself)."""
        char = self.pattern[self.pos + 1 : self.pos + 2]
        if char == "d":
            self.pos += 2
            return list("0123456789")
        if not char or char.isalnum():
            self.fail(f"the escape '\\{char}'" + (" in a character set" if in_set else ""))
        self.pos += 2
        return [char]

    def charset(self):
        """``[...]`` of characters, ranges ``a-z`` and ``\\d``, in the order written."""
        self.pos += 1
        if self.peek() == "^":
            self.fail("a negated character set")
        chars = []
        while self.peek() != "]":
            if not self.peek():
                self.fail("an unterminated character set")
            if self.peek() == "\\":
                chars.extend(self.escape(in_set=True))
            elif self.peek(2)[1:] == "-" and self.peek(3)[2:] not in ("", "]"):
                low, high = self.pattern[self.pos], self.pattern[self.pos + 2]
                chars.extend(chr(c) for c in range(ord(low), ord(high) + 1))
                self.pos += 3
            else:
                chars.append(self.peek())
                self.pos += 1
        self.pos += 1
        return chars
