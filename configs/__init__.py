"""YAML configs of lightning_yolo, installed as a data package so the CLI finds them (see cli.demo_config_path)."""
