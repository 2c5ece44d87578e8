"""What a task is and how it runs: workload parsing, execution, result records.

Everything an instance of the fleet runs lives here, so this package imports
nothing from ``scheduler`` or ``client``.
"""
