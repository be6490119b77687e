"""Who can reach the job and what it trusts: its TLS credentials (made for
the job, no secret shared), private folders and files, and the ownership rules
for every file it reads as trusted or writes."""
