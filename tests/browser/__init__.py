"""Tests of the dashboard in a real browser: headless Chromium, driven by Playwright."""
