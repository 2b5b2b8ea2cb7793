"""Guards against hostile files and inputs: what a pickle would import, where a path may lead, that every file read
below an allowed folder stays inside it, configs against their checkpoints, scheduler configs, image sizes
(docs/security.md)."""
