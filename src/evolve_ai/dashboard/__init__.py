"""The dashboard's and the report's templates and static files (shipped in the wheel)."""
