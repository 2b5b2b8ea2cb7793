"""The frozen models the methods drive, each with one strict loading path."""
