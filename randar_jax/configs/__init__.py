"""The training recipes shipped with the package, one ``get_config(arg)`` module per recipe: ``randar``, ``rar``,
``llamagen`` (ImageNet 256, after the originals) and ``digits`` (the CPU demo). Name one by module name or path:

  randar-jax train --config randar:variant=L,target=gpu --workdir runs/randar_l
  load_config('randar:runlocal')   # == load_config('randar_jax.configs.randar:runlocal') == a path to randar.py

Any other ``.py`` file with a ``get_config`` works too (``--config my_recipe.py:arg``).
"""
