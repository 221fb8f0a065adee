from capstone_assets.resources.lake import LakeResource
from capstone_assets.resources.spark import spark_resource
from capstone_assets.resources.tracker import TrackerResource

__all__ = ["LakeResource", "spark_resource", "TrackerResource"]
