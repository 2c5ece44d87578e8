"""The taskfleet AWS stack: a CDK v2 app, one construct per concern."""

import os

# jsii (which runs the CDK's JavaScript for Python) prints a 12-line banner,
# as Python byte strings, on every synth under Node 20. The README states the
# Node versions taskfleet is tested with; the banner would say nothing more.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
