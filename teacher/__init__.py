"""What a teacher does: the Teacher gRPC service and the lesson makers (DESIGN.md section 4)."""
