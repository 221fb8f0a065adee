from capstone_assets.resources.lake import LakeResource
from capstone_assets.resources.spark import spark_resource

__all__ = ["LakeResource", "spark_resource"]
