"""The one train step and the one loop every experiment shares."""
