"""Operations compose services and workers into what a command does."""
