"""The taskfleet AWS stack: a CDK v2 app, one construct per concern."""
