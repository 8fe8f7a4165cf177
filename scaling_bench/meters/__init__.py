"""How things are measured: time and memory, knowing nothing about models."""
