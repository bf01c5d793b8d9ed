"""The o1pruner web studio (Gradio): layout and event handlers only.

It builds specs, launches the same `o1pruner` stage commands a user would type (through
`o1pruner.jobs`) and shows what the workers write into their run directories. The engine
never imports this package.
"""
