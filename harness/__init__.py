"""Dev-only harness: real Redis, worker and emulator processes for tests, bench and demo."""
