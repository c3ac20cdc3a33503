"""Hardware profiles (TOML), shipped inside the package as ``snn_deploy.hw_profiles``."""
