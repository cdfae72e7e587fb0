"""Tests of the pictures: workflow and event graphs, and the endpoints and dashboard that show them."""
