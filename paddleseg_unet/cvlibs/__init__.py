from paddleseg_unet.cvlibs.registry import (BACKBONES, DATASETS, LOSSES, LR_SCHEDULERS, MODELS,
                                            OPTIMIZERS, TRANSFORMS, Registry, RegistryError,
                                            build, build_list)
from paddleseg_unet.cvlibs.config import Config, ConfigError, load_config
