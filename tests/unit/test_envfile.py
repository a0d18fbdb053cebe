"""The env file is read as compose reads it: compose-go's dotenv and template vectors.

Ported from compose-spec/compose-go (dotenv/godotenv_test.go, dotenv/parser_test.go,
dotenv/godotenv_var_expansion_test.go, dotenv/fixtures/*.env, template/template_test.go),
each named after its Go test. compose reads a project's .env with GetEnvFromFile: the
process environment first, then the file's earlier lines, inside expansions; names that
start with a digit are kept (only godotenv's Read drops them). Where this reader
deliberately differs, the vector says why (DIFFERS).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from supervisor.envfile import (
    INVALID_EXPECTED,
    SYNTAX_EXPECTED,
    EnvFileError,
    MissingVariableError,
    parse,
)


class Vector(NamedTuple):
    name: str
    text: str
    expected: dict[str, str]
    environ: dict[str, str] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)


class Refused(NamedTuple):
    name: str
    text: str
    message: str  # str(EnvFileError)
    environ: dict[str, str] = {}  # noqa: RUF012


# --- dotenv/fixtures --------------------------------------------------------------------

PLAIN = (
    "OPTION_A=1\nOPTION_B=2\nOPTION_C= 3\nOPTION_D =4\nOPTION_E = 5\n456 = ABC\n"
    "OPTION_F = \nOPTION_G=\nOPTION_H = my string # Inline comment\n"
)
PLAIN_VALUES = {
    "OPTION_A": "1",
    "OPTION_B": "2",
    "OPTION_C": "3",
    "OPTION_D": "4",
    "OPTION_E": "5",
    "456": "ABC",  # Go's Read drops it; GetEnvFromFile (compose's .env) keeps it
    "OPTION_F": "",
    "OPTION_G": "",
    "OPTION_H": "my string",
}
QUOTED = """\
OPTION_A='1'
OPTION_B='2'
OPTION_C=''
OPTION_D='\\n'
OPTION_E="1"
OPTION_F="2"
OPTION_G=""
OPTION_H="\\n"
OPTION_I = "echo 'asd'" # Inline comment
OPTION_J = 'first line
second line
third line
and so on'
OPTION_K='Let\\'s go!'
OPTION_Z = "last value"
"""
QUOTED_VALUES = {
    "OPTION_A": "1",
    "OPTION_B": "2",
    "OPTION_C": "",
    "OPTION_D": "\\n",
    "OPTION_E": "1",
    "OPTION_F": "2",
    "OPTION_G": "",
    "OPTION_H": "\n",
    "OPTION_I": "echo 'asd'",
    "OPTION_J": "first line\nsecond line\nthird line\nand so on",
    "OPTION_K": "Let's go!",
    "OPTION_Z": "last value",
}
UNQUOTED = (
    'OPTION_A = "some quoted phrase"\n'
    "OPTION_B=first one with an unquoted phrase\n"
    "OPTION_C = then another one with an unquoted phrase\n"
    "OPTION_D = then another one with an unquoted phrase special è char\n"
    'OPTION_E = "then another one quoted phrase"\n'
)
SUBSTITUTIONS = (
    "OPTION_A=1\nOPTION_B=${OPTION_A}\nOPTION_C=$OPTION_B\n"
    "OPTION_D=${OPTION_A}_${OPTION_B}\nOPTION_E=${OPTION_NOT_DEFINED}\n"
)
SUBSTITUTIONS_DEFAULT = SUBSTITUTIONS.replace("OPTION_A=1", "OPTION_A=${OPTION_A:-1}")
INVALID1 = '# some comments\nfoo="\n  a\n  multine\n  value\n"\nINVALID LINE\nzot=qix'
FROM_OS = {"VAR_TO_BE_LOADED_FROM_OS_ENV": "SOME_RANDOM_VALUE"}

# The envMap of godotenv_var_expansion_test.go, as lines above the one under test.
EXPANSION_MAP = "EMPTY_VAR=\nTEST_VAR='Test Value'\n"
EXPANSION_VALUES = {"EMPTY_VAR": "", "TEST_VAR": "Test Value"}
# The mapping of template_test.go.
TEMPLATE_ENV = {"FOO": "first", "BAR": "", "JSON": '{"json":2}'}


def expansion(template: str, result: str) -> Vector:
    return Vector(
        template, f"{EXPANSION_MAP}RESULT={template}", {**EXPANSION_VALUES, "RESULT": result}
    )


def template(template: str, result: str, environ: dict[str, str] = TEMPLATE_ENV) -> Vector:
    return Vector(template, f"R={template}", {"R": result}, environ)


def one(text: str, key: str, value: str) -> Vector:
    return Vector(text, text, {key: value})


VECTORS = [
    # godotenv_test.go: files
    Vector("TestReadPlainEnv", PLAIN, PLAIN_VALUES),
    Vector("TestParse", "ONE=1\nTWO='2'\nTHREE = \"3\"", {"ONE": "1", "TWO": "2", "THREE": "3"}),
    Vector(
        "TestLoadExportedEnv",
        "export OPTION_A=2\nexport OPTION_B='\\n'\n",
        {"OPTION_A": "2", "OPTION_B": "\\n"},
    ),
    Vector(
        "TestLoadEqualsEnv",
        "export OPTION_A='postgres://localhost:5432/database?sslmode=disable'\n\n",
        {"OPTION_A": "postgres://localhost:5432/database?sslmode=disable"},
    ),
    Vector("TestLoadQuotedEnv", QUOTED, QUOTED_VALUES),
    Vector(
        "TestLoadUnquotedEnv",
        UNQUOTED,
        {
            "OPTION_A": "some quoted phrase",
            "OPTION_B": "first one with an unquoted phrase",
            "OPTION_C": "then another one with an unquoted phrase",
            "OPTION_D": "then another one with an unquoted phrase special è char",
            "OPTION_E": "then another one quoted phrase",
        },
    ),
    Vector(
        "TestSubstitutions",
        SUBSTITUTIONS,
        {"OPTION_A": "1", "OPTION_B": "1", "OPTION_C": "1", "OPTION_D": "1_1", "OPTION_E": ""},
    ),
    Vector(
        "TestSubstitutionsWithEnvFilePrecedence",
        SUBSTITUTIONS,
        {"OPTION_A": "1", "OPTION_B": "5", "OPTION_C": "5", "OPTION_D": "5_5", "OPTION_E": ""},
        {"OPTION_A": "5"},
    ),
    Vector(
        "TestSubstitutionsWithEnvFileDefaultValuePrecedence",
        SUBSTITUTIONS_DEFAULT,
        {"OPTION_A": "5", "OPTION_B": "5", "OPTION_C": "5", "OPTION_D": "5_5", "OPTION_E": ""},
        {"OPTION_A": "5"},
    ),
    Vector(
        "TestSubstitutionsWithUnsetVarEnvFileDefaultValuePrecedence",
        SUBSTITUTIONS_DEFAULT,
        {"OPTION_A": "1", "OPTION_B": "1", "OPTION_C": "1", "OPTION_D": "1_1", "OPTION_E": ""},
    ),
    Vector(
        "TestInheritedEnvVariableSameSize",
        "foo=bar\nVAR_TO_BE_LOADED_FROM_OS_ENV\nbar=baz\n",
        {"foo": "bar", **FROM_OS, "bar": "baz"},
        FROM_OS,
    ),
    Vector("TestInheritedEnvVariableSingleVar", "VAR_TO_BE_LOADED_FROM_OS_ENV\n", FROM_OS, FROM_OS),
    Vector("TestInheritedEnvVariableNotFound", "VARIABLE_NOT_FOUND\n", {}),
    Vector("TestExpandingEnvironmentWithLookup", "TEST=$ME", {"TEST": "YES"}, {"ME": "YES"}),
    Vector("TestUTF8BOM", "\ufeff" + PLAIN.replace("OPTION_F = \n", "OPTION_F =\n"), PLAIN_VALUES),
    Vector(
        "TestDash",
        "VAR.WITH.DOTS=dots\nVAR_WITH_UNDERSCORES=underscores\nVAR-WITH-DASHES=dashes\n",
        {
            "VAR.WITH.DOTS": "dots",
            "VAR_WITH_UNDERSCORES": "underscores",
            "VAR-WITH-DASHES": "dashes",
        },
    ),
    Vector(
        "TestVariableStringValueSeparator",
        'TEST_URLS="stratum+tcp://stratum.antpool.com:3333\nstratum+tcp://stratum.antpool.com:443"',
        {
            "TEST_URLS": "stratum+tcp://stratum.antpool.com:3333\nstratum+tcp://stratum.antpool.com:443"
        },
    ),
    # godotenv_test.go: TestExpanding
    Vector(
        "expands variables found in values", "FOO=test\nBAR=$FOO", {"FOO": "test", "BAR": "test"}
    ),
    Vector(
        "parses variables in brackets", "FOO=test\nBAR=${FOO}bar", {"FOO": "test", "BAR": "testbar"}
    ),
    Vector("expands undefined variables to an empty string", "BAR=$FOO", {"BAR": ""}),
    Vector(
        "expands variables in double quoted strings",
        'FOO=test\nBAR="quote $FOO"',
        {"FOO": "test", "BAR": "quote test"},
    ),
    Vector("no expansion in single quotes", "BAR='quote $FOO'", {"BAR": "quote $FOO"}),
    Vector("escaped variables 1", r'FOO="foo\$BAR"', {"FOO": "foo$BAR"}),
    Vector("escaped variables 2", r'FOO="foo\${BAR}"', {"FOO": "foo${BAR}"}),
    Vector(
        "escaped variables 3",
        'FOO=test\nBAR="foo\\${FOO} ${FOO}"',
        {"FOO": "test", "BAR": "foo${FOO} test"},
    ),
    # godotenv_test.go: TestParsing
    one("FOO=bar", "FOO", "bar"),
    one("FOO =bar", "FOO", "bar"),
    one("FOO= bar", "FOO", "bar"),
    one('FOO="bar"', "FOO", "bar"),
    one("FOO='bar'", "FOO", "bar"),
    one(r'FOO="escaped\"bar"', "FOO", 'escaped"bar'),
    one(r'FOO="\"quoted\""', "FOO", '"quoted"'),
    one("FOO=\"'d'\"", "FOO", "'d'"),
    one("OPTION_A: 1", "OPTION_A", "1"),
    one("OPTION_A: Foo=bar", "OPTION_A", "Foo=bar"),
    one("OPTION_A=1:B", "OPTION_A", "1:B"),
    one("export OPTION_A=2", "OPTION_A", "2"),
    one(r"export OPTION_B='\n'", "OPTION_B", "\\n"),
    one("export exportFoo=2", "exportFoo", "2"),
    one("exportFOO=2", "exportFOO", "2"),
    one("export_FOO =2", "export_FOO", "2"),
    one("export.FOO= 2", "export.FOO", "2"),
    one("export\tOPTION_A=2", "OPTION_A", "2"),
    one("  export OPTION_A=2", "OPTION_A", "2"),
    one("\texport OPTION_A=2", "OPTION_A", "2"),
    one('export OPTION_A="export A"', "OPTION_A", "export A"),
    one(r'FOO="bar\nbaz"', "FOO", "bar\nbaz"),
    one(r"FOO=a\tb", "FOO", "a\\tb"),
    one(r'FOO="a\tb"', "FOO", "a\tb"),
    one(r'KEY="Z\aZ\bZ\fZ\nZ\rZ\tZ\vZ\\Z\0123Z"', "KEY", "Z\aZ\bZ\fZ\nZ\rZ\tZ\vZ\\ZSZ"),
    one("FOO.BAR=foobar", "FOO.BAR", "foobar"),
    one("FOO=foobar=", "FOO", "foobar="),
    one("FOO=bar ", "FOO", "bar"),
    one("FOO=bar # this is foo", "FOO", "bar"),
    one("FOO=bar #this is foo", "FOO", "bar"),
    one("FOO=bar #", "FOO", "bar"),
    one("FOO=123#not-an-inline-comment", "FOO", "123#not-an-inline-comment"),
    one('FOO="bar#baz"', "FOO", "bar#baz"),
    one('FOO="bar#baz"#', "FOO", "bar#baz"),
    one('FOO="bar#baz" # comment', "FOO", "bar#baz"),
    one("FOO='bar#baz' # comment", "FOO", "bar#baz"),
    one('FOO="bar#baz#bang" # comment', "FOO", "bar#baz#bang"),
    one('FOO="ba#r"', "FOO", "ba#r"),
    one("FOO='ba#r'", "FOO", "ba#r"),
    one(r'FOO="bar\n\ b\az"', "FOO", "bar\n\\ b\az"),
    one(r'FOO="bar\\\n\ b\az"', "FOO", "bar\\\n\\ b\az"),
    one(r'FOO="bar\\r\ b\az"', "FOO", "bar\\r\\ b\az"),
    one(r'FOO="bar\nbaz\\"', "FOO", "bar\nbaz\\"),
    one('="value"', "", "value"),
    one(" KEY =value", "KEY", "value"),
    one("   KEY=value", "KEY", "value"),
    one("\tKEY=value", "KEY", "value"),
    one(r'KEY="\0123"', "KEY", "S"),
    one(r'KEY="\x07"', "KEY", r"\x07"),
    one(r'KEY="\u12e4"', "KEY", r"\u12e4"),
    one(r'KEY="\U00101234"', "KEY", r"\U00101234"),
    # godotenv_test.go: TestLinesToIgnore
    Vector("a line break alone", "\n", {}),
    Vector("a windows line break alone", "\r\n", {}),
    Vector("a line of blanks", "\t\t ", {}),
    Vector("a comment", "# Comment", {}),
    Vector("an indented comment", "\t # comment", {}),
    one(r"export OPTION_B='\n'", "OPTION_B", "\\n"),
    # parser_test.go: TestParseBytes
    Vector(
        "TestParseBytes",
        "\na=b\na[1]=c\na.propertyKey=d\nárvíztűrő-TÜKÖRFÚRÓGÉP=ÁRVÍZTŰRŐ-tükörfúrógép\n",
        {
            "a": "b",
            "a[1]": "c",
            "a.propertyKey": "d",
            "árvíztűrő-TÜKÖRFÚRÓGÉP": "ÁRVÍZTŰRŐ-tükörfúrógép",
        },
    ),
    # godotenv_var_expansion_test.go
    expansion("${UNSET_VAR:-Default Value}", "Default Value"),
    expansion("${EMPTY_VAR:-Default Value}", "Default Value"),
    expansion("${TEST_VAR:-Default Value}", "Test Value"),
    expansion("${UNSET_VAR-Default Value}", "Default Value"),
    expansion("${EMPTY_VAR-Default Value}", ""),
    expansion("${TEST_VAR-Default Value}", "Test Value"),
    expansion("${TEST_VAR:?Default Value}", "Test Value"),
    expansion("${EMPTY_VAR?Test error}", ""),
    expansion("${TEST_VAR?Default Value}", "Test Value"),
    # template_test.go
    template("$${foo}", "${foo}"),
    template("foo", "foo"),
    template("a $ string", "a $ string"),
    template("^REGEX$", "^REGEX$"),
    template("$}", "$}"),
    template("$", "$"),
    template("$FOO-bar", "first-bar"),
    template("This ${missing} var", "This  var"),
    template("This ${BAR} var", "This  var"),
    template("This $FOO var", "This first var"),
    template("This ${FOO} var", "This first var"),
    template("ok ${missing:-def}", "ok def"),
    template("ok ${missing-def}", "ok def"),
    template("${A:+${A},}B", "B"),
    template("${A:-${B}}", ""),
    template("${A?${B}}", "value", {"A": "value"}),
    template("ok ${BAR:-def}", "ok def"),
    template("ok ${FOO:-def}", "ok first"),
    template("ok ${BAR-def}", "ok "),
    template("ok ${UNSET_VAR:+presence_value}", "ok "),
    template("ok ${UNSET_VAR+presence_value}", "ok "),
    template("ok ${FOO:+presence_value}", "ok presence_value"),
    template("ok ${FOO+presence_value}", "ok presence_value"),
    template("ok ${BAR+presence_value}", "ok presence_value"),
    template("ok ${BAR:+presence_value}", "ok "),
    template("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
    template("-ok ${BAR:-defaultValue}", "-ok defaultValue"),
    template("+ok ${UNSET:-${BAR-defaultValue}}", "+ok "),
    template("-ok ${FOO:-defaultValue}", "-ok first"),
    template(":-ok ${UNSET-defaultValue}", ":-ok defaultValue"),
    template(":-ok ${BAR-defaultValue}", ":-ok "),
    template(":?ok ${BAR-defaultValue}", ":?ok "),
    template(":?ok ${BAR:-defaultValue}", ":?ok defaultValue"),
    template(":+ok ${BAR:-defaultValue}", ":+ok defaultValue"),
    template("+ok ${BAR-defaultValue}", "+ok "),
    template("?ok ${BAR:-defaultValue}", "?ok defaultValue"),
    template("ok ${UNSET_VAR-$FOO}", "ok first"),
    template("ok ${UNSET_VAR-${FOO}}", "ok first"),
    template("ok ${UNSET_VAR-${FOO} ${FOO}}", "ok first first"),
    template("ok ${BAR:-$FOO}", "ok first"),
    template("ok ${BAR:-${FOO}}", "ok first"),
    template("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
    template("ok ${BAR+$FOO}", "ok first"),
    template("ok ${BAR+$FOO ${FOO:+second}}", "ok first second"),
    template("ok ${FOO:?err}", "ok first"),
    template("ok ${FOO?err}", "ok first"),
    template("ok ${BAR?err}", "ok "),
    template("${UNSET_VAR-myerror?msg}", "myerror?msg"),
    template("${FOO?bar-baz}", "first"),
    template("${BAR:-default_value_for_empty_var}", "default_value_for_empty_var"),
    template("${UNSET_VAR-default_value_for_unset_var}", "default_value_for_unset_var"),
    template("${VARNAME:-value}", "value"),
    template("${VARNAME-va:-lu:?e}", "va:-lu:?e"),
    template("${VARNAME-va+lu?e}", "va+lu?e"),
    template("${VARNAME-va?lu+e}", "va?lu+e"),
    template("${VARNAME:+va:?lu:-e}", "va:?lu:-e", {"VARNAME": "v"}),
    template("${VARNAME+va:+lue}", "va:+lue", {"VARNAME": "v"}),
    template("${VARNAME+va?lu-e}", "va?lu-e", {"VARNAME": "v"}),
    template("${VARNAME+va-lu?e}", "va-lu?e", {"VARNAME": "v"}),
    template('ok ${missing:-{"json":1}}', 'ok {"json":1}'),
    template('ok ${missing-{"json":1}}', 'ok {"json":1}'),
    template('ok ${JSON:-{"json":1}}', 'ok {"json":2}'),
    template('ok ${JSON-{"json":1}}', 'ok {"json":2}'),
    # The issue's own example: nothing expands in single quotes.
    Vector("single quotes stay literal", "X=def\nY='abc${X}ghi'", {"X": "def", "Y": "abc${X}ghi"}),
]

INVALID_TEMPLATE = INVALID_EXPECTED
REFUSED = [
    # godotenv_test.go
    Refused("TestParsing lol$wut", "lol$wut", f"line 1: {SYNTAX_EXPECTED}"),
    *(
        Refused(f"TestUnterminatedQuotes {text}", text, f"line 1: {SYNTAX_EXPECTED}")
        for text in [
            'KEY="',
            'KEY="value',
            'KEY="value\\"',
            "KEY=\"value'",
            "KEY='",
            "KEY='value",
            "KEY='value\\'",
            "KEY='value\"",
        ]
    ),
    # compose-go: "line 7: key cannot contain a space"
    Refused("TestErrorParsing", INVALID1, f"line 7: {SYNTAX_EXPECTED}"),
    # parser_test.go: 'unexpected character "%" in variable name'
    Refused("TestParseVariable", "%!(EXTRA string)=foo", f"line 1: {SYNTAX_EXPECTED}"),
    # godotenv_var_expansion_test.go
    Refused(
        "TestErrorIfEmptyOrUnset UNSET_VAR",
        f"{EXPANSION_MAP}RESULT=${{UNSET_VAR:?Test error}}",
        "line 3: RESULT: ${UNSET_VAR:?Test error}: Test error",
    ),
    Refused(
        "TestErrorIfEmptyOrUnset EMPTY_VAR",
        f"{EXPANSION_MAP}RESULT=${{EMPTY_VAR:?Test error}}",
        "line 3: RESULT: ${EMPTY_VAR:?Test error}: Test error",
    ),
    Refused(
        "TestErrorIfUnset UNSET_VAR",
        f"{EXPANSION_MAP}RESULT=${{UNSET_VAR?Test error}}",
        "line 3: RESULT: ${UNSET_VAR?Test error}: Test error",
    ),
    # template_test.go: TestMandatoryVariableErrors and ...WithNestedExpansion
    *(
        Refused(f"TestMandatoryVariableErrors {text}", f"R=not ok {text}", message, TEMPLATE_ENV)
        for text, message in [
            (
                "${UNSET_VAR:?Mandatory Variable Unset}",
                "line 1: R: ${UNSET_VAR:?Mandatory Variable Unset}: Mandatory Variable Unset",
            ),
            (
                "${BAR:?Mandatory Variable Empty}",
                "line 1: R: ${BAR:?Mandatory Variable Empty}: Mandatory Variable Empty",
            ),
            (
                "${UNSET_VAR:?}",
                "line 1: R: ${UNSET_VAR:?}: expected UNSET_VAR to be set and not empty",
            ),
            (
                "${UNSET_VAR?Mandatory Variable Unset}",
                "line 1: R: ${UNSET_VAR?Mandatory Variable Unset}: Mandatory Variable Unset",
            ),
            ("${UNSET_VAR?}", "line 1: R: ${UNSET_VAR?}: expected UNSET_VAR to be set"),
            (
                "${UNSET_VAR:?Mandatory Variable ${FOO}}",
                "line 1: R: ${UNSET_VAR:?Mandatory Variable ${FOO}}: Mandatory Variable first",
            ),
            (
                "${UNSET_VAR?Mandatory Variable ${FOO}}",
                "line 1: R: ${UNSET_VAR?Mandatory Variable ${FOO}}: Mandatory Variable first",
            ),
        ]
    ),
    # template_test.go: TestPrecedence, TestSubstitutionFunctionChoice
    Refused(
        "TestPrecedence ${UNSET_VAR?bar-baz}",
        "R=${UNSET_VAR?bar-baz}",
        "line 1: R: ${UNSET_VAR?bar-baz}: bar-baz",
    ),
    *(
        Refused(f"TestSubstitutionFunctionChoice {word}", f"R=${{VARNAME{word}}}", message)
        for word, message in [
            (":?val?ue", "line 1: R: ${VARNAME:?val?ue}: val?ue"),
            ("?val:?ue", "line 1: R: ${VARNAME?val:?ue}: val:?ue"),
            ("?va-lu+e:?e", "line 1: R: ${VARNAME?va-lu+e:?e}: va-lu+e:?e"),
            ("?va+lu-e:?e", "line 1: R: ${VARNAME?va+lu-e:?e}: va+lu-e:?e"),
        ]
    ),
    # template_test.go: TestInvalid
    *(
        Refused(f"TestInvalid {text}", f"R={text}", f"line 1: R: {text}: {INVALID_TEMPLATE}")
        for text in ["${", "${}", "${ }", "${ foo}", "${foo }", "${foo!}"]
    ),
]

DIFFERS = [
    # compose-go reads on after a closing quote as if a new line began there: `A="x" B=y`
    # also sets B, and `A="x" y` looks y up. Refused here: a slip, not a second setting.
    Refused("text after a closing quote", 'A="x" B=y', f"line 1: {SYNTAX_EXPECTED}"),
    Refused("a name after a closing quote", "A='x' y", f"line 1: {SYNTAX_EXPECTED}"),
    # compose-go's brace count skips the character after each `{`, so an unbalanced
    # brace in a default can still parse; here braces in a default must balance.
    Refused(
        "an unbalanced brace in a default",
        "R=${A:-{x}",
        f"line 1: R: ${{A:-{{x}}: {INVALID_TEMPLATE}",
    ),
]


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_compose_go_vectors_read_as_compose_reads_them(vector: Vector) -> None:
    """Each of compose-go's dotenv and template vectors gives compose's values."""
    assert vector.expected == parse(vector.text, vector.environ)


@pytest.mark.parametrize("refused", REFUSED + DIFFERS, ids=[r.name for r in REFUSED + DIFFERS])
def test_compose_go_error_vectors_are_refused_naming_the_line(refused: Refused) -> None:
    """What compose refuses is an EnvFileError naming the line (and the variable)."""
    with pytest.raises(EnvFileError) as caught:
        parse(refused.text, refused.environ)
    assert refused.message == str(caught.value)


def test_a_missing_required_variable_names_the_variable_and_the_message() -> None:
    """${NAME:?message} with NAME unset is a MissingVariableError carrying both."""
    with pytest.raises(MissingVariableError) as caught:
        parse("A=1\nMY_REG_DIR=${DATA:?set DATA to the data dir}\n", {})
    assert ("MY_REG_DIR", "DATA", "set DATA to the data dir", 2) == (
        caught.value.key,
        caught.value.name,
        caught.value.reason,
        caught.value.line,
    )


def test_the_environment_wins_inside_expansions_over_earlier_lines() -> None:
    """${X} takes X from the process environment before an earlier line of the file."""
    assert {"X": "file", "Y": "env"} == parse("X=file\nY=${X}\n", {"X": "env"})


def test_a_later_line_does_not_count_for_an_earlier_expansion() -> None:
    """Expansions see only the lines above, as compose reads top to bottom."""
    assert {"Y": "", "X": "late"} == parse("Y=${X}\nX=late\n", {})


def test_a_name_alone_on_the_last_line_without_a_line_break_is_inherited() -> None:
    """DIFFERS: compose-go stores it under the key "" (a bug); here it is inherited."""
    assert {"LAST": "v"} == parse("LAST", {"LAST": "v"})


def test_octal_escapes_need_three_digits_as_in_compose_go() -> None:
    """\\0 and \\01 come out as \\ and \\1, as compose-go reads them (not XSI's NUL and ^A)."""
    assert {"A": "\\", "B": "\\1", "C": "\n"} == parse('A="\\0"\nB="\\01"\nC="\\0012"\n', {})


def test_a_dollar_escaped_in_double_quotes_is_literal() -> None:
    """\\$ and $$ both give a literal $ in double quotes; in single quotes nothing changes."""
    assert {"A": "$X", "B": "$X", "C": "\\$X$$X"} == parse(
        'A="\\$X"\nB="$$X"\nC=\'\\$X$$X\'\n', {"X": "no"}
    )


def test_an_error_reports_the_line_where_the_value_starts() -> None:
    """A multi-line quoted value's error names the line of its name."""
    with pytest.raises(MissingVariableError) as caught:
        parse("A='1\n2\n3'\nB=\"x\ny${Z?}\"\n", {})
    assert 4 == caught.value.line


def test_expansions_nested_too_deeply_are_an_error_not_a_crash() -> None:
    """A thousand nested defaults is an EnvFileError, never a RecursionError."""
    with pytest.raises(EnvFileError) as caught:
        parse("A=" + "${A:-" * 2000 + "x" + "}" * 2000, {})
    assert "line 1: A: ${: expected fewer nested expansions" == str(caught.value)
