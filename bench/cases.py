"""The benchmark's directives, in three kinds, with reference checks the loop never sees.

``checks`` are assert statements about ``f`` (the skill's function, whatever it is named); they
run in the sandbox after the directive ends, for scoring only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    kind: str  # plain | signature | examples
    goal: str
    checks: tuple[str, ...]


CASES = [
    # the seeds' goals, in plain language
    Case("plain", "Create a JSON validator skill",
         ("assert f('{\"a\": [1, 2]}') is True", "assert f('{a: 1') is False", "assert f('[]') is True")),
    Case("plain", "Create a CSV to JSON converter skill",
         ("out = f('name,age\\nann,3')",
          "assert json.loads(out) in ([{'name': 'ann', 'age': '3'}], [{'name': 'ann', 'age': 3}])")),
    Case("plain", "Build a base64 encoder",
         ("assert f('hello') in ('aGVsbG8=', b'aGVsbG8=')",)),
    Case("plain", "Make a URL parser skill",
         ("r = f('https://example.com:8080/a/b?x=1')", "assert 'example.com' in str(r)",
          "assert '/a/b' in str(r)")),
    Case("plain", "Create a markdown to HTML converter",
         ("assert '<h1>Title</h1>' in f('# Title')",)),
    Case("plain", "Create a regex pattern matcher",
         ("assert f('a+b', 'xaab') in (True, 'aab', ['aab'])", "assert f('z', 'abc') in (False, None, '', [])")),
    # a signature, no examples
    Case("signature", "Create a skill `celsius_to_fahrenheit(c: float) -> float` that converts temperatures",
         ("assert f(100) == 212", "assert f(0) == 32", "assert abs(f(-40) + 40) < 1e-9")),
    Case("signature", "Create a skill `is_leap_year(year: int) -> bool`",
         ("assert f(2000) is True", "assert f(1900) is False", "assert f(2024) is True", "assert f(2023) is False")),
    Case("signature", "I want `count_digits(text: str) -> int` which counts the digits in a string",
         ("assert f('a1b22') == 3", "assert f('') == 0")),
    Case("signature", "Create a skill `reverse_string(text: str) -> str`",
         ("assert f('abc') == 'cba'", "assert f('') == ''")),
    Case("signature", "Add a skill `capitalize_words(text: str) -> str` that capitalizes each word",
         ("assert f('hello big world') == 'Hello Big World'",)),
    Case("signature", "Create `sum_of_squares(numbers: list[int]) -> int`",
         ("assert f([1, 2, 3]) == 14", "assert f([]) == 0")),
    Case("signature", "Create a skill `is_anagram(a: str, b: str) -> bool`",
         ("assert f('listen', 'silent') is True", "assert f('ab', 'abc') is False")),
    Case("signature", "Create a skill `gcd(a: int, b: int) -> int` for the greatest common divisor",
         ("assert f(12, 18) == 6", "assert f(7, 5) == 1")),
    Case("signature", "Create a skill `remove_duplicates(items: list[int]) -> list[int]` keeping the first of each",
         ("assert f([1, 2, 1, 3, 2]) == [1, 2, 3]", "assert f([]) == []")),
    Case("signature", "Create a skill `fizzbuzz(n: int) -> str`",
         ("assert f(3) == 'Fizz'", "assert f(5) == 'Buzz'", "assert f(15) == 'FizzBuzz'", "assert f(7) == '7'")),
    # a signature and examples (one of three or more is held back)
    Case("examples", "Create a skill `reverse_words(text: str) -> str` that reverses the order of words, "
                     "e.g. reverse_words('hello big world') == 'world big hello'",
         ("assert f('a b') == 'b a'", "assert f('one') == 'one'")),
    Case("examples", "Create a skill `is_palindrome(text: str) -> bool` that tells whether text reads the same "
                     "backwards, e.g. is_palindrome('racecar') == True, is_palindrome('abc') == False, "
                     "is_palindrome('noon') == True",
         ("assert f('level') is True", "assert f('ab') is False")),
    Case("examples", "Create a skill `factorial(n: int) -> int` that computes n factorial, e.g. factorial(5) == 120, "
                     "factorial(0) == 1, factorial(3) == 6",
         ("assert f(6) == 720", "assert f(1) == 1")),
    Case("examples", "Create a skill `count_words(text: str) -> int` that counts the words in text, "
                     "e.g. count_words('a bb ccc') == 3, count_words('') == 0",
         ("assert f('one two') == 2",)),
    Case("examples", "Create a skill `square(n: int) -> int` that returns n squared, e.g. square(3) == 9, "
                     "square(-4) == 16",
         ("assert f(5) == 25", "assert f(0) == 0")),
    Case("examples", "Create a skill `max_of_two(a: int, b: int) -> int` that returns the larger of two numbers, "
                     "e.g. max_of_two(3, 8) == 8, max_of_two(9, 2) == 9, max_of_two(4, 4) == 4",
         ("assert f(-1, -5) == -1", "assert f(10, 11) == 11")),
]
