"""Services with one job each: files, workspace, config, template, registry, logs."""
