"""A person's words for a User-Agent header: "Chrome on macOS".

Only the browser family and the operating system, which is what a user needs to tell
their sessions apart (as GitHub and Google show them); versions and device models would
add noise and a parsing library with a regex database to keep up to date (ADR 0082).
"""

from __future__ import annotations

# First match wins: Edge and Opera also say "Chrome", Chrome also says "Safari".
_BROWSERS: tuple[tuple[str, str], ...] = (
    ("Edg", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("python-requests/", "Python requests"),
)

_SYSTEMS: tuple[tuple[str, str], ...] = (
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)


def browser_name(user_agent: str) -> str:
    return next((name for token, name in _BROWSERS if token in user_agent), "")


def system_name(user_agent: str) -> str:
    return next((name for token, name in _SYSTEMS if token in user_agent), "")


def describe_user_agent(user_agent: str) -> str:
    """ "Firefox on Windows", "Safari", "Unknown browser"."""
    browser, system = browser_name(user_agent), system_name(user_agent)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or f"Browser on {system}"
    return "Unknown browser"
