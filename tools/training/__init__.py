"""Fine-tuning from approved contours: gather cases from the PACS, keep them on disk, train a MONAI UNet.

Gathering: `gather` scans the PACS for CT series with an approved RTSTRUCT / SEG (or a structure
set a person made); `labels` reads a label object, `origin` decides whether it may teach, and
`pairing` pairs it with its CT series and saves the case. `dataset` stores each case in the
monai-bundle engine's frame.

Training: `train` runs the epochs with checkpoint and resume; `config` holds what to train,
`network` the UNet (new or from a bundle being fine-tuned), `inputs` the patches, `evaluate`
the held-out Dice, and `bundle` writes the MONAI bundle that the `monai-bundle` engine loads.
"""
