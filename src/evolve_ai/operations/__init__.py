"""Operations compose services and workers into what a command does."""

MAX_AGENTS_PER_INIT = 1_000_000
