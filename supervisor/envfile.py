"""The env file, read as docker compose reads its ``.env`` (pure: no I/O).

compose-go's ``dotenv`` package is the reference (its parser and ``template``
interpolation); its test vectors are ported in tests/unit/test_envfile.py. In short:

- ``NAME=value`` or ``NAME: value``, an optional ``export `` before; blank lines and
  ``#`` comments; a ``NAME`` alone takes the value from the process environment.
- Unquoted values end at the line's end or at `` #``, trailing blanks removed.
- ``'single quotes'`` keep everything literally (``\\'`` is a quote); they may span lines.
- ``"double quotes"`` may span lines and know ``\\n \\t \\r \\a \\b \\f \\v \\\\ \\" \\$``
  and ``\\0NNN`` (octal).
- Unquoted and double-quoted values expand ``$NAME``, ``${NAME}``, ``${NAME:-default}``,
  ``${NAME-default}``, ``${NAME:+alt}``, ``${NAME+alt}``, ``${NAME:?message}`` and
  ``${NAME?message}`` (nested in defaults too); ``$$`` is a literal ``$``. A name is looked
  up in the process environment first, then in the lines above.

Where compose-go's behaviour is an accident of its implementation, this reader refuses
the input instead of guessing (each place says so).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Go's unicode.IsSpace minus the line break: blanks around names, `=` and values.
_BLANKS = "\t\v\f\r \x85\xa0"
# Go's unicode.IsSpace: what is trimmed from the end of an unquoted value.
_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_EXPORT = re.compile(f"export[{_BLANKS}]+")
_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
# The inside of ${...}: a name, then an operator and its word (no line break, as in Go).
_BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-+?])(.*))?")
_ESCAPE = re.compile(r"""\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})""")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES.update({'"': '"', "\\": "\\", "$": "$$"})  # `$$`: the template's literal $

SYNTAX_EXPECTED = "expected NAME=value, a comment or a blank"
INVALID_EXPECTED = (
    "expected $NAME, ${NAME}, ${NAME:-default} or another compose form (a literal $ is $$)"
)

# lookup(name, plain): the value of NAME, or None; ``plain`` says the expansion has no
# default (`$NAME`, `${NAME}`), where compose warns that an unset NAME becomes blank.
Lookup = Callable[[str, bool], str | None]


class EnvFileError(ValueError):
    """A line of the env file that cannot be read; ``str()`` is the one-line report."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class ExpansionError(EnvFileError):
    """An expansion in ``key``'s value that cannot be made: ``expression`` (as written, up
    to 60 characters) and ``detail``, what is wrong with it."""

    def __init__(self, line: int, key: str, expression: str, detail: str) -> None:
        super().__init__(line, f"{key}: {expression}: {detail}")
        self.key, self.expression, self.detail = key, expression, detail


class MissingVariableError(ExpansionError):
    """``${NAME:?message}`` or ``${NAME?message}`` with NAME unset (or empty, for ``:?``)."""

    def __init__(self, line: int, key: str, expression: str, name: str, reason: str) -> None:
        super().__init__(line, key, expression, reason)
        self.name, self.reason = name, reason


@dataclass
class _Missing(Exception):
    expression: str
    name: str
    reason: str


@dataclass
class _Invalid(Exception):
    expression: str


@dataclass(frozen=True)
class Unset:
    """A `$NAME` or `${NAME}` (no default) whose NAME is set nowhere: it became blank."""

    line: int
    key: str
    name: str


def parse(
    text: str, environ: Mapping[str, str], unset: list[Unset] | None = None
) -> dict[str, str]:
    """The env file's NAME -> value pairs, interpolated as compose does.

    ``environ`` is the process environment: it wins inside expansions (and gives the value
    of a ``NAME`` line alone); the result holds the file's own values only. Raises
    EnvFileError (MissingVariableError for ``${NAME:?message}``) naming the line. Each
    variable expanded without a default and set nowhere is appended to ``unset`` (compose
    warns "variable is not set. Defaulting to a blank string").
    """
    parser = _Parser(text.removeprefix("\ufeff"), environ)
    values = parser.parse()
    if unset is not None:
        unset.extend(parser.unset)
    return values


class _Parser:
    def __init__(self, text: str, environ: Mapping[str, str]) -> None:
        self.text, self.environ = text, environ
        self.pos, self.line = 0, 1
        self.values: dict[str, str] = {}
        self.unset: list[Unset] = []
        self.current: tuple[int, str] = (0, "")

    def lookup(self, name: str, plain: bool = False) -> str | None:
        if name in self.environ:
            return self.environ[name]
        value = self.values.get(name)
        if value is None and plain:
            self.unset.append(Unset(self.current[0], self.current[1], name))
        return value

    def parse(self) -> dict[str, str]:
        while self.skip_blank_lines_and_comments():
            start = self.line
            key, assigned = self.key(start)
            if not assigned:
                inherited = self.lookup(key, False)
                if inherited is not None:
                    self.values[key] = inherited
                continue
            raw, quote = self.value(start)
            if quote == "'":
                self.values[key] = raw
                continue
            template = _unescape(raw) if quote == '"' else raw
            self.current = (start, key)
            try:
                self.values[key] = _substitute(template, self.lookup)
            except _Missing as missing:
                raise MissingVariableError(
                    start, key, missing.expression, missing.name, missing.reason
                ) from None
            except _Invalid as invalid:
                raise ExpansionError(start, key, invalid.expression, INVALID_EXPECTED) from None
            except RecursionError:  # ${A:-${A:-${A:-...}}} a thousand deep
                raise ExpansionError(start, key, "${", "expected fewer nested expansions") from None
        return self.values

    def skip_blank_lines_and_comments(self) -> bool:
        """Move to the next statement; False at the end of the text."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif char in _WHITESPACE:
                self.line += char == "\n"
                self.pos += 1
            else:
                return True
        return False

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _BLANKS:
            self.pos += 1

    def key(self, line: int) -> tuple[str, bool]:
        """The name, and whether `=` or `:` follows it (else it stands alone on its line)."""
        text = self.text
        export = _EXPORT.match(text, self.pos)
        if export:
            self.pos = export.end()
        start = self.pos
        while self.pos < len(text) and _is_name_char(text[self.pos]):
            self.pos += 1
        key = text[start : self.pos]
        self.skip_blanks()
        if self.pos == len(text) or text[self.pos] == "\n":
            # compose-go stores a name alone on the file's last line under the key ""
            # (a bug); here it is a name alone like any other.
            return key, False
        if text[self.pos] in "=:":
            self.pos += 1
            self.skip_blanks()
            return key, True
        # A blank inside the name, a quoted name, `lol$wut`: compose refuses them too.
        raise EnvFileError(line, SYNTAX_EXPECTED)

    def value(self, line: int) -> tuple[str, str]:
        """The raw value and its quote ('', ' or ")."""
        text = self.text
        if self.pos == len(text) or text[self.pos] not in "'\"":
            end = text.find("\n", self.pos)
            end = len(text) if end < 0 else end
            raw = text[self.pos : end].split(" #", 1)[0].rstrip(_WHITESPACE)
            self.pos = end
            return raw, ""
        quote = text[self.pos]
        chars: list[str] = []
        escaped = False
        for index in range(self.pos + 1, len(text)):
            char = text[index]
            self.line += char == "\n"
            if char == quote and not escaped:
                self.pos = index + 1
                self.rest_of_line(line)
                return "".join(chars), quote
            if escaped:
                # A backslash stays, unless it escaped the quote.
                chars.append(char if char == quote else f"\\{char}")
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                chars.append(char)
        raise EnvFileError(line, SYNTAX_EXPECTED)  # unterminated quote

    def rest_of_line(self, line: int) -> None:
        """After a closing quote: blanks, then a comment or the line's end.

        compose-go reads on after the quote as if a new line began there, so
        ``A="x" B=y`` also sets B and ``A="x" y`` looks y up: refused here, as a slip.
        """
        self.skip_blanks()
        text = self.text
        if self.pos < len(text) and text[self.pos] not in "#\n":
            raise EnvFileError(line, SYNTAX_EXPECTED)


def _is_name_char(char: str) -> bool:
    # compose-go: letters and numbers of any script, and _ . - [ ]
    return char in "_.-[]" or unicodedata.category(char)[0] in "LN"


def _unescape(value: str) -> str:
    """Double-quoted escapes, as compose-go expands them before interpolating."""

    def replace(match: re.Match[str]) -> str:
        escape = match[0][1:]
        if not escape.startswith("0"):
            return _ESCAPES.get(escape, match[0])  # \c is no escape: it stays
        digits = escape[1:]
        if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) < 256:
            return chr(int(digits, 8))
        # compose-go turns \0 into \ before Go's octal rules, which need exactly three
        # digits up to \377: \0, \01 or \0400 come out as \, \1 and \400 (XSI echo would
        # read \0 as NUL); kept, so that both read the file alike.
        return f"\\{digits}"

    return _ESCAPE.sub(replace, value)


def _substitute(template: str, lookup: Lookup) -> str:
    """``template`` with $NAME, ${NAME...} and $$ expanded (compose-go's template rules)."""
    out: list[str] = []
    index, end = 0, len(template)
    while index < end:
        dollar = template.find("$", index)
        if dollar < 0:
            out.append(template[index:])
            break
        out.append(template[index:dollar])
        after = dollar + 1
        named = _NAME.match(template, after)
        if template.startswith("$", after):
            out.append("$")
            index = after + 1
        elif named:
            out.append(lookup(named[0], True) or "")
            index = named.end()
        elif template.startswith("{", after):
            close = _closing_brace(template, after)
            if close < 0:
                raise _Invalid(_shorten(template[dollar:]))
            out.append(_braced(template[dollar : close + 1], lookup))
            index = close + 1
        else:  # `$` before anything else is literal: "a $ b", "^x$", "$}"
            out.append("$")
            index = after
    return "".join(out)


def _closing_brace(template: str, opening: int) -> int:
    """The index of the `}` that closes the `{` at ``opening``, or -1.

    Braces nest: ``${A:-{x}}`` closes at the last one. (compose-go's count also skips the
    character after each `{`, so it reads ``${A:-{}x}y}`` to the end; here it closes after x.)
    """
    depth = 0
    for index in range(opening, len(template)):
        char = template[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _braced(expression: str, lookup: Lookup) -> str:
    match = _BRACED.fullmatch(expression[2:-1])
    if match is None:
        raise _Invalid(_shorten(expression))
    name, operator, word = match[1], match[2], match[3]
    value = lookup(name, operator is None)
    # The word is expanded only where it is used, as in compose.
    if operator is None:
        return value or ""
    if operator in (":-", "-"):
        unset = value is None or (operator == ":-" and value == "")
        return _substitute(word, lookup) if unset else str(value)
    if operator in (":+", "+"):
        given = value is not None and (operator == "+" or value != "")
        return _substitute(word, lookup) if given else (value or "")
    if value is None or (operator == ":?" and value == ""):
        reason = _substitute(word, lookup)
        if not reason:
            reason = f"expected {name} to be set" + (" and not empty" if operator == ":?" else "")
        raise _Missing(_shorten(expression), name, reason)
    return value


def _shorten(expression: str) -> str:
    return expression if len(expression) <= 60 else f"{expression[:57]}..."
