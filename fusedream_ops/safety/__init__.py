"""Guards against hostile files and inputs: what a pickle would import, where a path may lead."""
