"""Find and evaluate arithmetic in a prompt, so "What is 2+2?" gets an answer containing 4.

A small recursive-descent evaluator instead of eval(): prompts are untrusted text and the result must
be exact and deterministic (integers stay integers; 144/12 is 12, not 12.0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# A run of characters that can make up an expression; the parser decides whether it is one.
_CANDIDATE_RE = re.compile(r"(?:(?<![\w).])[-−])?[\d(][\d\s.()+\-*/^×÷−xX]*[\d)]")
_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\*\*|[-+*/^()])")
_MAX_EXPONENT = 4096
_MAX_DIGITS = 200


class NotArithmetic(ValueError):
    """The text is not an expression this evaluator accepts."""


@dataclass(frozen=True)
class Calculation:
    expression: str
    """Normalised, e.g. `12 * 9`."""
    value: str
    """Formatted result, e.g. `108`, `3.5`, `0.333333`, or `undefined (division by zero)`."""

    def sentence(self) -> str:
        return f"{self.expression} = {self.value}"


def _normalise(text: str) -> str:
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-")
    # `12 x 9` means multiplication only between numbers; leave other x's to fail parsing.
    return re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])", " * ", text)


class _Parser:
    """expr := term (('+'|'-') term)*; term := power (('*'|'/') power)*;
    power := unary (('^'|'**') power)?; unary := '-' unary | atom; atom := NUMBER | '(' expr ')'."""

    def __init__(self, text: str):
        self.tokens: list[str] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN_RE.match(text, pos)
            if not match:
                raise NotArithmetic(text)
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0
        self.operators = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise NotArithmetic("unexpected end")
        self.pos += 1
        return token

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None or self.operators == 0:
            raise NotArithmetic("trailing tokens or no operator")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            self.operators += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.power()
        while self.peek() in ("*", "/"):
            op = self.take()
            self.operators += 1
            rhs = self.power()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ZeroDivisionError
            else:
                value = value / rhs
        return value

    def power(self) -> Fraction:
        base = self.unary()
        if self.peek() in ("^", "**"):
            self.take()
            self.operators += 1
            exponent = self.power()
            if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT:
                raise NotArithmetic("exponent must be a whole number up to 4096")
            if base == 0 and exponent < 0:
                raise ZeroDivisionError
            return base ** int(exponent)
        return base

    def unary(self) -> Fraction:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        return self.atom()

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise NotArithmetic("unbalanced parenthesis")
            return value
        if token[0].isdigit():
            return Fraction(token)
        raise NotArithmetic(f"unexpected {token!r}")


def format_number(value: Fraction) -> str:
    """Integers exactly; other values to at most 6 decimals, trailing zeros dropped."""
    if value.denominator == 1:
        text = str(value.numerator)
        return text if len(text) <= _MAX_DIGITS else f"{text[:20]}...({len(text)} digits)"
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _pretty(expression: str) -> str:
    tokens = _TOKEN_RE.findall(expression)
    out = ""
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        is_binary = token in ("+", "-", "*", "/", "^", "**") and prev not in (None, "(", "+", "-", "*", "/", "^", "**")
        if is_binary:
            out += f" {token} "
        else:
            out += token
    return out.strip()


def evaluate(expression: str) -> Calculation:
    """Evaluate one expression; raises NotArithmetic when it is not one."""
    normalised = _normalise(expression)
    parser = _Parser(normalised)
    try:
        value = format_number(parser.parse())
    except ZeroDivisionError:
        value = "undefined (division by zero)"
    return Calculation(_pretty(normalised), value)


def _trimmed_variants(candidate: str):
    text = candidate.strip()
    yield text
    # Prose parentheses around or after an expression: "(see 2+2)" or "2+2)".
    while text.startswith("(") or text.endswith(")"):
        text = text[1:] if text.startswith("(") and text.count("(") > text.count(")") else text
        text = text[:-1] if text.endswith(")") and text.count(")") > text.count("(") else text
        if text == candidate.strip():
            break
        yield text.strip()
        candidate = text


def find_calculations(text: str) -> list[Calculation]:
    """Every expression in `text`, in order of appearance, each evaluated once."""
    found: list[Calculation] = []
    for match in _CANDIDATE_RE.finditer(text):
        for variant in _trimmed_variants(match.group(0)):
            try:
                found.append(evaluate(variant))
                break
            except NotArithmetic:
                continue
    return found
