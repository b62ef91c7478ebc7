terraform {
  # Object attributes with defaults (optional(type, default)) need 1.3; 1.5 is the oldest
  # release this configuration supports.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.100 is the last 5.x release; 6.x renamed arguments this configuration deliberately
      # does not use (the Batch compute environment is left unnamed, for instance), so the same
      # code plans on both majors.
      version = ">= 5.100, < 7.0"
    }
  }
}
