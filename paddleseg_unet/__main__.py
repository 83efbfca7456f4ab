"""``python -m paddleseg_unet COMMAND ...``: the same as the installed ``paddleseg-unet``."""
import sys

from paddleseg_unet.apis.commands import main

sys.exit(main())
